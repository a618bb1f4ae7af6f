import {
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import type { Cell } from '@jupyterlab/cells';
import type * as nbformat from '@jupyterlab/nbformat';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import type { PanelLayout } from '@lumino/widgets';

import type { CodeLlamaClient, IPendingRequest } from './client';
import { codePointOffset } from './edit/diff';
// eslint-disable-next-line jupyter/prefer-lazy-imports -- small, and opened from a shortcut: no wait on first use
import { CellEdit, IEditClient } from './edit/model';
// eslint-disable-next-line jupyter/prefer-lazy-imports -- small, and opened from a shortcut: no wait on first use
import { CellEditView } from './edit/view';
import type { IEditRequest, ISelection } from './protocol';
import { CommandIDs, ICodeLlamaClient } from './tokens';

/**
 * "Edit Cell with Code Llama…": the active cell, or the code selected in it, rewritten as the
 * user says. The proposal streams into a diff under the cell's editor; Accept puts it in the
 * cell as one undo step and never runs it, Reject (or Escape) leaves the cell as it was.
 */
export const editPlugin: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-codellama:edit',
  description:
    'Edit a cell or its selection by instruction, reviewing the change as a diff.',
  autoStart: true,
  requires: [ICodeLlamaClient, INotebookTracker],
  optional: [ICommandPalette, ISettingRegistry],
  activate: (
    app: JupyterFrontEnd,
    clients: ICodeLlamaClient,
    tracker: INotebookTracker,
    palette: ICommandPalette | null,
    settingRegistry: ISettingRegistry | null
  ): void => {
    let settings = Private.DEFAULTS;
    if (settingRegistry) {
      void settingRegistry.load(editPlugin.id).then(loaded => {
        settings = Private.readSettings(loaded);
        loaded.changed.connect(() => {
          settings = Private.readSettings(loaded);
        });
      });
    }
    const views = new Map<Cell, CellEditView>();

    const open = (panel: NotebookPanel, cell: Cell): void => {
      const shown = views.get(cell);
      if (shown) {
        shown.focusInput();
        return;
      }
      const client = clients.forSession(panel.sessionContext);
      const view = Private.openEdit(panel, cell, client, () => settings);
      views.set(cell, view);
      view.disposed.connect(() => views.delete(cell));
    };

    app.commands.addCommand(CommandIDs.editCell, {
      label: 'Edit Cell with Code Llama…',
      caption:
        'Rewrite the active cell, or the code selected in it, as you say; review the change as a diff before it goes in',
      describedBy: { args: { type: 'object', properties: {} } },
      isEnabled: () =>
        tracker.currentWidget?.content.activeCell?.model.type === 'code',
      execute: () => {
        const panel = tracker.currentWidget;
        const cell = panel?.content.activeCell;
        if (panel && cell && cell.model.type === 'code') {
          open(panel, cell);
        }
      }
    });
    palette?.addItem({ command: CommandIDs.editCell, category: 'Code Llama' });
  }
};

namespace Private {
  export interface ISettings {
    maxNewTokens: number;
    temperature: number;
    notebookContext: boolean;
    variables: boolean;
  }

  export const DEFAULTS: ISettings = {
    maxNewTokens: 512,
    temperature: 0,
    notebookContext: true,
    variables: true
  };

  export function readSettings(
    settings: ISettingRegistry.ISettings
  ): ISettings {
    return { ...DEFAULTS, ...(settings.composite as Partial<ISettings>) };
  }

  /**
   * Open the kernel link, loading jupyter-codellama in the kernel (silently: no cell runs) when
   * it is not: the user asked for a Code Llama edit. Failures show when the edit is sent.
   */
  export async function link(client: CodeLlamaClient): Promise<void> {
    let state = client.state;
    if (state === 'connecting' || state === 'kernel-busy') {
      state = await client.connect();
    }
    if (state === 'extension-missing') {
      await client.loadExtension();
    }
  }

  /** A new edit box on `cell`, closed on Accept or Reject (the focus back on the cell). */
  export function openEdit(
    panel: NotebookPanel,
    cell: Cell,
    client: CodeLlamaClient,
    settings: () => ISettings
  ): CellEditView {
    void link(client);
    const edit = new CellEdit({
      cell: cell.model.sharedModel,
      client: linkedClient(client),
      fields: () => requestFields(panel, cell, settings()),
      selection: selectionOf(cell)
    });
    const view = new CellEditView(edit);
    edit.stateChanged.connect((_, state) => {
      if (state === 'accepted' || state === 'rejected') {
        view.dispose();
        panel.content.mode = 'command';
        cell.node.focus();
      }
    });
    cell.disposed.connect(() => view.dispose());
    attach(cell, view);
    view.focusInput();
    return view;
  }

  /** The link, each edit request sent once it is open (an instruction may be typed faster). */
  export function linkedClient(client: CodeLlamaClient): IEditClient {
    return {
      request: (type, body, options) => {
        let sent: IPendingRequest<'edit'> | null = null;
        let cancelled = false;
        const done = link(client).then(() => {
          if (cancelled) {
            throw new Error('Stopped.');
          }
          sent = client.request(type, body, options);
          return sent.done;
        });
        return {
          get requestId() {
            return sent?.requestId ?? '';
          },
          done,
          cancel: () => {
            cancelled = true;
            sent?.cancel();
          }
        };
      }
    };
  }

  /** The notebook as the request carries it: every cell (the kernel keeps what fits), or one. */
  export function requestFields(
    panel: NotebookPanel,
    cell: Cell,
    settings: ISettings
  ): Omit<IEditRequest, 'instruction'> {
    const options = {
      variables: settings.variables,
      max_new_tokens: settings.maxNewTokens,
      temperature: settings.temperature
    };
    const json = (c: Cell) => c.model.toJSON() as nbformat.ICell;
    if (!settings.notebookContext) {
      return { ...options, cells: [json(cell)], current: 0 };
    }
    const widgets = panel.content.widgets;
    return {
      ...options,
      cells: widgets.map(json),
      current: widgets.indexOf(cell)
    };
  }

  /** The editor's selection in the kernel's units (code points), or null for the whole cell. */
  export function selectionOf(cell: Cell): ISelection | null {
    const editor = cell.editor;
    if (!editor) {
      return null;
    }
    const range = editor.getSelection();
    const [a, b] = [
      editor.getOffsetAt(range.start),
      editor.getOffsetAt(range.end)
    ];
    if (a === b) {
      return null;
    }
    const source = editor.model.sharedModel.getSource();
    return {
      start: codePointOffset(source, Math.min(a, b)),
      end: codePointOffset(source, Math.max(a, b))
    };
  }

  /** Under the cell's editor, above its outputs. */
  export function attach(cell: Cell, view: CellEditView): void {
    const layout = cell.layout as PanelLayout;
    const input = cell.inputArea?.parent;
    const index = input ? layout.widgets.indexOf(input) : -1;
    layout.insertWidget(index >= 0 ? index + 1 : layout.widgets.length, view);
  }
}
