import {
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import type * as nbformat from '@jupyterlab/nbformat';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';

import { errorText, sourceText } from './context';
import { snapshotNotebook } from './notebook';
import { CommandIDs, ICodeLlamaChat } from './tokens';

/** Notebook commands that ask the chat about the active cell. */
export const commandsPlugin: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-codellama:commands',
  description: 'Explain, fix, generate and ask commands for notebook cells.',
  autoStart: true,
  requires: [ICodeLlamaChat, INotebookTracker],
  optional: [ICommandPalette],
  activate: (
    app: JupyterFrontEnd,
    chat: ICodeLlamaChat,
    tracker: INotebookTracker,
    palette: ICommandPalette | null
  ): void => {
    const current = (): NotebookPanel | null => {
      const widget = tracker.currentWidget;
      return widget && widget === app.shell.currentWidget
        ? widget
        : tracker.currentWidget;
    };
    const activeCell = (): nbformat.ICell | null => {
      const panel = current();
      const cell = panel?.content.activeCell;
      return cell ? (cell.model.toJSON() as nbformat.ICell) : null;
    };
    const hasCell = () => activeCell() !== null;

    app.commands.addCommand(CommandIDs.explainCell, {
      label: 'Explain Cell with Code Llama',
      caption: 'Ask Code Llama what the active cell does',
      describedBy: { args: { type: 'object', properties: {} } },
      isEnabled: hasCell,
      execute: () => {
        const panel = current();
        if (panel) {
          return chat.ask(
            panel,
            Private.EXPLAIN,
            { activeCell: true, selection: false },
            'explain'
          );
        }
      }
    });

    app.commands.addCommand(CommandIDs.fixError, {
      label: 'Fix Error in Cell with Code Llama',
      caption: 'Ask Code Llama to fix the error the active cell raised',
      describedBy: { args: { type: 'object', properties: {} } },
      isEnabled: () => {
        const cell = activeCell();
        return cell !== null && errorText(cell) !== '';
      },
      execute: () => {
        const panel = current();
        const cell = activeCell();
        if (panel && cell) {
          return chat.ask(
            panel,
            Private.fixLabel(cell),
            { activeCell: true, lastError: true, selection: false },
            'fix'
          );
        }
      }
    });

    app.commands.addCommand(CommandIDs.generateFromComment, {
      label: "Generate Code from the Cell's Comment",
      caption:
        'Ask Code Llama to write the code that the comment in the active cell describes',
      describedBy: { args: { type: 'object', properties: {} } },
      isEnabled: () => {
        const cell = activeCell();
        return cell !== null && sourceText(cell).trim() !== '';
      },
      execute: () => {
        const panel = current();
        const cell = activeCell();
        if (panel && cell) {
          return chat.ask(panel, Private.generateQuestion(cell), {
            activeCell: true,
            selection: false
          });
        }
      }
    });

    app.commands.addCommand(CommandIDs.askSelection, {
      label: 'Ask Code Llama about the Selection',
      caption: 'Put the selected code in the chat and type a question about it',
      describedBy: { args: { type: 'object', properties: {} } },
      isEnabled: hasCell,
      execute: () => {
        const panel = current();
        if (!panel) {
          return;
        }
        const selection = snapshotNotebook(panel)?.selection ?? '';
        chat.draft(panel, selection ? 'What does the selected code do?' : '');
      }
    });

    for (const command of [
      CommandIDs.explainCell,
      CommandIDs.fixError,
      CommandIDs.generateFromComment,
      CommandIDs.askSelection
    ]) {
      palette?.addItem({ command, category: 'Code Llama' });
    }
  }
};

/**
 * What the conversation shows for a command. The kernel words the question itself (explain and
 * fix requests): these labels are for the person reading the chat.
 */
namespace Private {
  export const EXPLAIN = 'Explain the active cell.';

  /** The error's last line names it; the whole traceback travels with the cell's outputs. */
  export function fixLabel(cell: nbformat.ICell): string {
    const lines = errorText(cell).trim().split('\n');
    return `Fix the active cell's error: \`${lines[lines.length - 1]}\``;
  }

  export function generateQuestion(cell: nbformat.ICell): string {
    return (
      'Write the Python code that the comment in the active cell asks for. Answer with one ' +
      `code block that can replace the cell.\n\n\`\`\`python\n${sourceText(cell)}\n\`\`\``
    );
  }
}
