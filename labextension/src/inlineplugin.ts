import {
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import type { ISessionContext } from '@jupyterlab/apputils';
import type { Cell } from '@jupyterlab/cells';
import { ICompletionProviderManager, IInlineCompletionContext } from '@jupyterlab/completer';
import type * as nbformat from '@jupyterlab/nbformat';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import type { Widget } from '@lumino/widgets';

import { codeLlamaIcon } from './icons';
// eslint-disable-next-line jupyter/prefer-lazy-imports -- activate() registers the provider at once
import { CodeLlamaInlineProvider, IEditorTarget } from './inline/provider';
import { newLineTrigger } from './inline/triggers';
import { ICodeLlamaClient } from './tokens';

/** JupyterLab's command that asks the inline completer for suggestions now (Alt+\). */
const INVOKE_INLINE = 'inline-completer:invoke';

/** Inline completion (ghost text) from the kernel's model in notebook and console cells. */
export const inlinePlugin: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-codellama:inline',
  description: 'Inline completion (ghost text) from the Code Llama model in the kernel.',
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
      resolve: (context: IInlineCompletionContext) => Private.target(clients, context.widget),
      icon: codeLlamaIcon
    });
    manager.registerInlineProvider(provider);
    if (!tracker) {
      return;
    }

    // Prewarm: when a code cell gets the focus, prefill its context into the model's cache.
    let prewarmTimer: ReturnType<typeof setTimeout> | null = null;
    const schedulePrewarm = () => {
      if (prewarmTimer !== null) {
        clearTimeout(prewarmTimer);
      }
      prewarmTimer = setTimeout(() => {
        prewarmTimer = null;
        const panel = tracker.currentWidget;
        const cell = panel?.content.activeCell;
        if (panel && cell) {
          provider.prewarm(Private.target(clients, panel)!, cell.model.sharedModel.getSource());
        }
      }, 400);
    };

    // A new line after a comment or ':' — JupyterLab does not trigger on a blank line; we do.
    let watched: Cell | null = null;
    let newLineTimer: ReturnType<typeof setTimeout> | null = null;
    const onSourceChanged = () => {
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
        const panel = tracker.currentWidget;
        if (!cell || watched !== cell || !panel || cell.model.type !== 'code' || !cell.editor?.hasFocus()) {
          return;
        }
        const state = Private.cursorState(cell);
        if (!state || !newLineTrigger(state.prefix, state.suffix)) {
          return;
        }
        const client = clients.forSession(panel.sessionContext);
        if (client.state === 'ready' && client.status?.state === 'ready' && app.commands.hasCommand(INVOKE_INLINE)) {
          void app.commands.execute(INVOKE_INLINE);
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
  /** The kernel link and notebook around `widget` (a notebook or a console), or null. */
  export function target(clients: ICodeLlamaClient, widget: Widget): IEditorTarget | null {
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
    const session = (widget as Widget & { sessionContext?: ISessionContext }).sessionContext;
    if (session) {
      return { client: clients.forSession(session), cellType: 'code' };
    }
    return null;
  }

  /** The active cell's text before and after the cursor, when its editor has a cursor. */
  export function cursorState(cell: Cell): { prefix: string; suffix: string } | null {
    const editor = cell.editor;
    if (!editor) {
      return null;
    }
    const text = editor.model.sharedModel.getSource();
    const offset = editor.getOffsetAt(editor.getCursorPosition());
    return { prefix: text.slice(0, offset), suffix: text.slice(offset) };
  }
}
