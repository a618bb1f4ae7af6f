import {
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import type { ISessionContext } from '@jupyterlab/apputils';
import type { Cell } from '@jupyterlab/cells';
import type { CodeMirrorEditor } from '@jupyterlab/codemirror';
import {
  ICompletionProviderManager,
  IInlineCompletionContext
} from '@jupyterlab/completer';
import type * as nbformat from '@jupyterlab/nbformat';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import type { Widget } from '@lumino/widgets';

import { codeLlamaIcon } from './icons';
// eslint-disable-next-line jupyter/prefer-lazy-imports -- the accept commands are keyboard shortcuts: no wait on first use
import { AcceptUnit, acceptPart, IAcceptEditor } from './inline/accept';
// eslint-disable-next-line jupyter/prefer-lazy-imports -- activate() registers the provider at once
import {
  CodeLlamaInlineProvider,
  IEditorTarget,
  splitAtCharOffset
} from './inline/provider';
import { newLineTrigger } from './inline/triggers';
import { CommandIDs, ICodeLlamaClient } from './tokens';

/** JupyterLab's command that asks the inline completer for suggestions now (Alt+\). */
const INVOKE_INLINE = 'inline-completer:invoke';

const ACCEPT_COMMANDS: string[] = [
  CommandIDs.acceptWord,
  CommandIDs.acceptLine
];

/** Inline completion (ghost text) from the kernel's model in notebook and console cells. */
export const inlinePlugin: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-codellama:inline',
  description:
    'Inline completion (ghost text) from the Code Llama model in the kernel.',
  autoStart: true,
  requires: [ICodeLlamaClient, ICompletionProviderManager],
  optional: [INotebookTracker],
  activate: (
    app: JupyterFrontEnd,
    clients: ICodeLlamaClient,
    manager: ICompletionProviderManager,
    tracker: INotebookTracker | null
  ): void => {
    const provider = new CodeLlamaInlineProvider({
      resolve: (context: IInlineCompletionContext) =>
        Private.target(clients, context.widget),
      icon: codeLlamaIcon
    });
    manager.registerInlineProvider(provider);
    if (!tracker) {
      return;
    }

    Private.addAcceptCommands(app, provider, tracker, manager);

    const schedulePrewarm = Private.prewarmer(provider, clients, tracker);

    // A new line after a comment or ':' — JupyterLab does not trigger on a blank line; we do.
    let watched: Cell | null = null;
    let newLineTimer: ReturnType<typeof setTimeout> | null = null;
    const onSourceChanged = () => {
      Private.edited(provider, clients, tracker.currentWidget, watched);
      if (!provider.enabled || !provider.settings.triggerOnNewLine) {
        return;
      }
      // Look once the edit (and the cursor move that goes with it) has settled.
      if (newLineTimer !== null) {
        clearTimeout(newLineTimer);
      }
      const cell = watched;
      newLineTimer = setTimeout(() => {
        newLineTimer = null;
        if (cell && watched === cell) {
          Private.newLineCheck(app, clients, tracker.currentWidget, cell);
        }
      }, 200);
    };
    const watch = (cell: Cell | null) => {
      if (watched) {
        watched.model.contentChanged.disconnect(onSourceChanged);
      }
      watched = cell;
      if (cell) {
        cell.model.contentChanged.connect(onSourceChanged);
      }
    };

    tracker.activeCellChanged.connect((_, cell) => {
      watch(cell);
      if (cell && cell.model.type === 'code') {
        schedulePrewarm();
      }
    });
    tracker.currentChanged.connect(() => watch(tracker.activeCell));
  }
};

namespace Private {
  /** Prewarm: when a code cell gets the focus (and keeps it a moment), prefill its context into the model's cache. */
  export function prewarmer(
    provider: CodeLlamaInlineProvider,
    clients: ICodeLlamaClient,
    tracker: INotebookTracker
  ): () => void {
    let timer: ReturnType<typeof setTimeout> | null = null;
    return () => {
      if (timer !== null) {
        clearTimeout(timer);
      }
      timer = setTimeout(() => {
        timer = null;
        const panel = tracker.currentWidget;
        const cell = panel?.content.activeCell;
        if (panel && cell) {
          provider.prewarm(
            target(clients, panel)!,
            cell.model.sharedModel.getSource()
          );
        }
      }, 400);
    };
  }

  /** Ask for a suggestion now when the cursor of `cell` is on a new line after a comment or ':'. */
  export function newLineCheck(
    app: JupyterFrontEnd,
    clients: ICodeLlamaClient,
    panel: NotebookPanel | null,
    cell: Cell
  ): void {
    if (!panel || cell.model.type !== 'code' || !cell.editor?.hasFocus()) {
      return;
    }
    const state = cursorState(cell);
    if (!state || !newLineTrigger(state.prefix, state.suffix)) {
      return;
    }
    const client = clients.forSession(panel.sessionContext);
    if (
      client.state === 'ready' &&
      client.status?.state === 'ready' &&
      app.commands.hasCommand(INVOKE_INLINE)
    ) {
      void app.commands.execute(INVOKE_INLINE);
    }
  }

  /** Accept the next word / line of our ghost text; the rest is shown again at once. */
  export function addAcceptCommands(
    app: JupyterFrontEnd,
    provider: CodeLlamaInlineProvider,
    tracker: INotebookTracker,
    manager: ICompletionProviderManager
  ): void {
    const accept = (unit: AcceptUnit) => {
      const panel = tracker.currentWidget;
      const editor = panel?.content.activeCell?.editor as
        CodeMirrorEditor | null | undefined;
      if (!panel || !editor || !showsOurGhost(editor.host)) {
        return;
      }
      const left = acceptPart(acceptEditor(editor), provider, unit);
      if (left?.trim()) {
        // A line break moved the cursor, and JupyterLab then drops the ghost text: ask again,
        // and the provider answers with the rest it holds.
        manager.inline?.invoke(panel.id);
      }
    };
    app.commands.addCommand(CommandIDs.acceptWord, {
      label: 'Accept the Next Word of the Suggestion',
      caption:
        'Insert the next word of the Code Llama ghost text; the rest stays shown.',
      describedBy: { args: { type: 'object', properties: {} } },
      execute: () => accept('word')
    });
    app.commands.addCommand(CommandIDs.acceptLine, {
      label: 'Accept the Line of the Suggestion',
      caption:
        'Insert the Code Llama ghost text up to its next line break; the rest stays shown.',
      describedBy: { args: { type: 'object', properties: {} } },
      execute: () => accept('line')
    });
    document.addEventListener('keydown', event => acceptKeys(app, event), true);
  }

  /** A cell's text changed: if that completed our suggestion, the provider prefetches the next. */
  export function edited(
    provider: CodeLlamaInlineProvider,
    clients: ICodeLlamaClient,
    panel: NotebookPanel | null,
    cell: Cell | null
  ): void {
    const state = panel && cell?.editor?.hasFocus() ? cursorState(cell) : null;
    if (panel && state) {
      provider.edited(() => target(clients, panel), state.prefix, state.suffix);
    }
  }

  /** The kernel link and notebook around `widget` (a notebook or a console), or null. */
  export function target(
    clients: ICodeLlamaClient,
    widget: Widget
  ): IEditorTarget | null {
    if (widget instanceof NotebookPanel) {
      const notebook = widget.content;
      const active = notebook.activeCell;
      if (!active) {
        return null;
      }
      // Sources only: outputs would make every request heavy, and the kernel knows the values.
      const cells = notebook.widgets.map(
        cell =>
          ({
            cell_type: cell.model.type,
            source: cell.model.sharedModel.getSource(),
            metadata: {}
          }) as nbformat.ICell
      );
      return {
        client: clients.forSession(widget.sessionContext),
        cellType: active.model.type,
        cells,
        current: notebook.activeCellIndex
      };
    }
    const session = (widget as Widget & { sessionContext?: ISessionContext })
      .sessionContext;
    if (session) {
      return { client: clients.forSession(session), cellType: 'code' };
    }
    return null;
  }

  /** The active cell's text before and after the cursor (split as the provider's requests are). */
  export function cursorState(
    cell: Cell
  ): { prefix: string; suffix: string } | null {
    const editor = cell.editor;
    if (!editor) {
      return null;
    }
    const text = editor.model.sharedModel.getSource();
    const [prefix, suffix] = splitAtCharOffset(
      text,
      editor.getOffsetAt(editor.getCursorPosition())
    );
    return { prefix, suffix };
  }

  /** Whether the ghost text in an editor is ours (another provider's may be cycled to). */
  export function showsOurGhost(host: Element): boolean {
    return (
      host.querySelector(
        `.jp-GhostText[data-provided-by="${CodeLlamaInlineProvider.ID}"]`
      ) !== null
    );
  }

  const IS_MAC = /Mac/.test(
    typeof navigator === 'undefined' ? '' : navigator.platform
  );

  /** The keystroke of `event` as key bindings hold it once normalized, e.g. `Ctrl ArrowRight`. */
  export function keystroke(event: KeyboardEvent): string {
    const mods = [
      event.ctrlKey && 'Ctrl',
      event.altKey && 'Alt',
      event.shiftKey && 'Shift',
      event.metaKey && IS_MAC && 'Cmd'
    ].filter(Boolean);
    return [
      ...mods,
      event.key.length === 1 ? event.key.toUpperCase() : event.key
    ].join(' ');
  }

  /**
   * CodeMirror handles its own keys (Ctrl+Right moves by a word) before JupyterLab's shortcuts
   * see them. While our ghost text is shown, the shortcuts of the accept commands (as the user
   * has them in the settings) go first; otherwise the key does what it always does.
   */
  export function acceptKeys(app: JupyterFrontEnd, event: KeyboardEvent): void {
    const target = event.target instanceof Element ? event.target : null;
    const host = target?.closest('.jp-mod-inline-completer-active');
    if (!target || !host || !showsOurGhost(host)) {
      return;
    }
    const pressed = keystroke(event);
    const binding = app.commands.keyBindings.find(
      b =>
        ACCEPT_COMMANDS.includes(b.command) &&
        b.keys.length === 1 &&
        b.keys[0] === pressed &&
        target.closest(b.selector)
    );
    if (binding) {
      event.preventDefault();
      event.stopPropagation();
      void app.commands.execute(binding.command, binding.args);
    }
  }

  /** A CodeMirror editor as accepting needs it: one transaction, the cursor after the text. */
  export function acceptEditor(editor: CodeMirrorEditor): IAcceptEditor {
    return {
      source: editor.model.sharedModel.getSource(),
      cursor: editor.getOffsetAt(editor.getCursorPosition()),
      insert: (offset, text) =>
        editor.editor.dispatch({
          changes: { from: offset, insert: text },
          selection: { anchor: offset + text.length }
        })
    };
  }
}
