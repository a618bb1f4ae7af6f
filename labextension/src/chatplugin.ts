import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { IRenderMimeRegistry } from '@jupyterlab/rendermime';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { IStateDB } from '@jupyterlab/statedb';
import type { ReadonlyPartialJSONValue } from '@lumino/coreutils';

// eslint-disable-next-line jupyter/prefer-lazy-imports -- activate() builds the panel at once
import { ChatPanel } from './chat/panel';
import type { IChatEntry } from './chat/model';
// eslint-disable-next-line jupyter/prefer-lazy-imports -- activate() builds the model at once
import {
  ChatSidebarModel,
  DEFAULT_SIDEBAR_SETTINGS,
  IChatStore,
  ISidebarSettings
} from './chat/sidebarmodel';
import { DEFAULT_CONTEXT, IContextOptions } from './context';
import { codeLlamaIcon } from './icons';
import { NotebookTarget } from './notebook';
import { CommandIDs, ICodeLlamaChat, ICodeLlamaClient } from './tokens';

/** The chat sidebar: follows the active notebook, one conversation per notebook. */
export const chatPlugin: JupyterFrontEndPlugin<ICodeLlamaChat> = {
  id: 'jupyter-codellama:chat',
  description:
    'A chat sidebar with the Code Llama model running in the notebook kernel.',
  autoStart: true,
  requires: [ICodeLlamaClient, INotebookTracker, IRenderMimeRegistry],
  optional: [ISettingRegistry, ILayoutRestorer, IStateDB, ICommandPalette],
  provides: ICodeLlamaChat,
  activate: async (
    app: JupyterFrontEnd,
    clients: ICodeLlamaClient,
    tracker: INotebookTracker,
    rendermime: IRenderMimeRegistry,
    settingRegistry: ISettingRegistry | null,
    restorer: ILayoutRestorer | null,
    state: IStateDB | null,
    palette: ICommandPalette | null
  ): Promise<ICodeLlamaChat> => {
    const model = new ChatSidebarModel({
      store: state ? Private.store(state) : undefined
    });
    const panel = new ChatPanel({ model, rendermime });
    panel.id = 'jupyter-codellama-chat';
    panel.title.icon = codeLlamaIcon;
    panel.title.caption = 'Code Llama chat';

    const targets = new WeakMap<NotebookPanel, NotebookTarget>();
    const targetFor = (notebook: NotebookPanel): NotebookTarget => {
      let target = targets.get(notebook);
      if (!target) {
        target = new NotebookTarget(
          notebook,
          clients.forSession(notebook.sessionContext)
        );
        targets.set(notebook, target);
        notebook.disposed.connect(() => model.forget(notebook.id));
      }
      return target;
    };
    const follow = (notebook: NotebookPanel | null) => {
      model.target = notebook ? targetFor(notebook) : null;
    };
    tracker.currentChanged.connect((_, notebook) => follow(notebook));
    follow(tracker.currentWidget);

    let side: 'left' | 'right' = 'right';
    if (settingRegistry) {
      try {
        const settings = await settingRegistry.load(chatPlugin.id);
        side = settings.composite.side === 'left' ? 'left' : 'right';
        model.settings = Private.readSettings(settings);
        settings.changed.connect(() => {
          model.settings = Private.readSettings(settings);
        });
      } catch (reason) {
        console.warn(
          'jupyter-codellama: could not read the chat settings',
          reason
        );
      }
    }
    app.shell.add(panel, side, { rank: 900 });
    restorer?.add(panel, 'jupyter-codellama-chat');

    const chat: ICodeLlamaChat = {
      open: () => {
        app.shell.activateById(panel.id);
        panel.focusInput();
      },
      ask: async (notebook, question, context, task) => {
        follow(notebook);
        app.shell.activateById(panel.id);
        await model.ask(question, context, task);
      },
      draft: (notebook, text) => {
        follow(notebook);
        const conversation = model.chat;
        if (conversation) {
          conversation.draft = text;
        }
        chat.open();
      }
    };

    app.commands.addCommand(CommandIDs.openChat, {
      label: 'Open Code Llama Chat',
      caption: 'Show the Code Llama chat sidebar',
      describedBy: { args: { type: 'object', properties: {} } },
      icon: codeLlamaIcon,
      execute: () => chat.open()
    });
    palette?.addItem({ command: CommandIDs.openChat, category: 'Code Llama' });
    return chat;
  }
};

namespace Private {
  export function readSettings(
    settings: ISettingRegistry.ISettings
  ): ISidebarSettings {
    const c = settings.composite as Record<string, unknown>;
    const context = {
      ...DEFAULT_CONTEXT,
      ...((c.context as Partial<IContextOptions>) ?? {})
    };
    return {
      ...DEFAULT_SIDEBAR_SETTINGS,
      defaultModel: (c.defaultModel as string) ?? '',
      temperature:
        (c.temperature as number) ?? DEFAULT_SIDEBAR_SETTINGS.temperature,
      maxNewTokens:
        (c.maxNewTokens as number) ?? DEFAULT_SIDEBAR_SETTINGS.maxNewTokens,
      historyMessages:
        (c.historyMessages as number) ??
        DEFAULT_SIDEBAR_SETTINGS.historyMessages,
      context
    };
  }

  /** Conversations saved in the state database, one entry per notebook path. */
  export function store(state: IStateDB): IChatStore {
    const key = (path: string) => `jupyter-codellama:chat:${path}`;
    return {
      load: async path => {
        const saved = (await state
          .fetch(key(path))
          .catch(() => undefined)) as unknown;
        return Array.isArray(saved) ? (saved as IChatEntry[]) : null;
      },
      save: async (path, entries) => {
        await state.save(
          key(path),
          entries as unknown as ReadonlyPartialJSONValue
        );
      }
    };
  }
}
