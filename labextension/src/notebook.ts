/**
 * A notebook as the chat sees it: a snapshot of its cells for the context, and what the code
 * block buttons do to it.
 */
import { Clipboard } from '@jupyterlab/apputils';
import type * as nbformat from '@jupyterlab/nbformat';
import { NotebookActions, NotebookPanel } from '@jupyterlab/notebook';

import type { CodeLlamaClient } from './client';
import type { INotebookSnapshot } from './context';
import type { ICodeActions, IChatTarget } from './chat/sidebarmodel';

/** Read the notebook now: cells (with outputs), the active cell, the editor's selection. */
export function snapshotNotebook(
  panel: NotebookPanel
): INotebookSnapshot | null {
  const notebook = panel.content;
  if (!notebook.model) {
    return null;
  }
  const cells = notebook.widgets.map(
    cell => cell.model.toJSON() as nbformat.ICell
  );
  const active = notebook.activeCell;
  let selection = '';
  const editor = active?.editor;
  if (editor) {
    const range = editor.getSelection();
    const start = editor.getOffsetAt(range.start);
    const end = editor.getOffsetAt(range.end);
    if (start !== end) {
      selection = editor.model.sharedModel
        .getSource()
        .slice(Math.min(start, end), Math.max(start, end));
    }
  }
  return {
    cells,
    activeIndex: active ? notebook.activeCellIndex : null,
    selection
  };
}

/** The code block buttons, acting on `panel`'s active cell. */
export class NotebookCodeActions implements ICodeActions {
  constructor(private readonly _panel: NotebookPanel) {}

  insertBelow(code: string): void {
    const notebook = this._panel.content;
    if (!notebook.model) {
      return;
    }
    if (notebook.widgets.length === 0) {
      notebook.model.sharedModel.insertCell(0, {
        cell_type: 'code',
        source: code
      });
      notebook.activeCellIndex = 0;
    } else {
      NotebookActions.insertBelow(notebook);
      const cell = notebook.activeCell!;
      if (cell.model.type !== 'code') {
        NotebookActions.changeCellType(notebook, 'code');
      }
      notebook.activeCell!.model.sharedModel.setSource(code);
    }
    notebook.mode = 'command';
  }

  replaceActive(code: string): void {
    const cell = this._panel.content.activeCell;
    if (cell) {
      cell.model.sharedModel.setSource(code);
    } else {
      this.insertBelow(code);
    }
  }

  async insertAndRun(code: string): Promise<void> {
    this.insertBelow(code);
    await NotebookActions.run(this._panel.content, this._panel.sessionContext);
  }

  copy(code: string): void {
    Clipboard.copyToSystem(code);
  }
}

export class NotebookTarget implements IChatTarget {
  constructor(
    readonly panel: NotebookPanel,
    readonly client: CodeLlamaClient
  ) {
    this.actions = new NotebookCodeActions(panel);
  }

  readonly actions: ICodeActions;

  get id(): string {
    return this.panel.id;
  }

  get path(): string {
    return this.panel.context.path;
  }

  get label(): string {
    return this.panel.title.label;
  }

  snapshot(): INotebookSnapshot | null {
    return snapshotNotebook(this.panel);
  }
}
