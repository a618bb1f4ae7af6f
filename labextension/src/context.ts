/**
 * The notebook context a chat request carries: which cells, which one is current, whether the
 * kernel adds live variables, and the selected text. Pure functions over nbformat JSON, so the
 * rules are tested without a notebook widget.
 */
import type * as nbformat from '@jupyterlab/nbformat';

import type { INotebookContextFields } from './protocol';

/** The context chips the user toggles in the sidebar (and the settings' defaults). */
export interface IContextOptions {
  /** The active cell (source and outputs). */
  activeCell: boolean;
  /** The text selected in the active cell's editor, quoted in the question. */
  selection: boolean;
  /** Every cell of the notebook (the kernel keeps what fits its token budget). */
  notebook: boolean;
  /** Live variables from the kernel's namespace (names, types, shapes, columns). */
  variables: boolean;
  /** The cell that raised the most recent error, with its traceback. */
  lastError: boolean;
}

export type ContextKey = keyof IContextOptions;

export const CONTEXT_KEYS: ContextKey[] = [
  'activeCell',
  'selection',
  'notebook',
  'variables',
  'lastError'
];

export const DEFAULT_CONTEXT: IContextOptions = {
  activeCell: true,
  selection: true,
  notebook: false,
  variables: true,
  lastError: true
};

/** What the front end reads from a notebook at the moment a question is sent. */
export interface INotebookSnapshot {
  /**
   * The cells as JupyterLab serialises them. Their `id` and `execution_count` travel as they
   * are: the kernel matches them with what it ran (the same id comes with every execution) to
   * mark cells edited since they ran, never run, or run out of page order.
   */
  cells: nbformat.ICell[];
  /** Index of the active cell, or null when none is active. */
  activeIndex: number | null;
  /** The selected text in the active cell's editor ('' when nothing is selected). */
  selection: string;
}

export interface IBuiltContext {
  fields: INotebookContextFields;
  /** The selected text to quote in the question, when the selection chip is on. */
  selection: string;
}

/** The request fields for `snapshot` under `options`. */
export function buildContext(
  snapshot: INotebookSnapshot | null,
  options: IContextOptions
): IBuiltContext {
  if (snapshot === null) {
    return { fields: { variables: options.variables }, selection: '' };
  }
  const { cells, activeIndex } = snapshot;
  const active =
    activeIndex !== null && activeIndex < cells.length ? activeIndex : null;
  const errorIndex = options.lastError ? lastErrorIndex(cells) : null;

  let picked: number[];
  if (options.notebook) {
    picked = cells.map((_, i) => i);
  } else {
    picked = [];
    if (options.activeCell && active !== null) {
      picked.push(active);
    }
    if (errorIndex !== null && !picked.includes(errorIndex)) {
      picked.push(errorIndex);
    }
    picked.sort((a, b) => a - b);
  }

  const out = picked.map(i => {
    const cell = cells[i];
    return options.lastError ? cell : withoutErrors(cell);
  });
  const fields: INotebookContextFields = { variables: options.variables };
  if (out.length > 0) {
    fields.cells = out;
    const current =
      options.activeCell && active !== null ? picked.indexOf(active) : -1;
    if (current >= 0) {
      fields.current = current;
    }
  }
  return {
    fields,
    selection: options.selection ? snapshot.selection.trim() : ''
  };
}

/** Index of the code cell whose error output has the highest execution count. */
export function lastErrorIndex(cells: nbformat.ICell[]): number | null {
  let best: number | null = null;
  let bestCount = -Infinity;
  cells.forEach((cell, i) => {
    if (cell.cell_type !== 'code') {
      return;
    }
    const outputs = (cell as nbformat.ICodeCell).outputs ?? [];
    if (!outputs.some(o => o.output_type === 'error')) {
      return;
    }
    const count = (cell as nbformat.ICodeCell).execution_count ?? 0;
    if (count >= bestCount) {
      best = i;
      bestCount = count;
    }
  });
  return best;
}

/** The traceback of a cell's error output as plain text (ANSI colours removed), or ''. */
export function errorText(cell: nbformat.ICell): string {
  if (cell.cell_type !== 'code') {
    return '';
  }
  const error = ((cell as nbformat.ICodeCell).outputs ?? []).find(
    o => o.output_type === 'error'
  ) as nbformat.IError | undefined;
  if (!error) {
    return '';
  }
  const trace = (error.traceback ?? []).join('\n');
  return stripAnsi(trace || `${error.ename}: ${error.evalue}`);
}

export function sourceText(cell: nbformat.ICell): string {
  return Array.isArray(cell.source) ? cell.source.join('') : cell.source;
}

export function stripAnsi(text: string): string {
  // eslint-disable-next-line no-control-regex
  return text.replace(/\x1b\[[0-9;?]*[ -/]*[@-~]/g, '');
}

function withoutErrors(cell: nbformat.ICell): nbformat.ICell {
  if (cell.cell_type !== 'code') {
    return cell;
  }
  const code = cell as nbformat.ICodeCell;
  return {
    ...code,
    outputs: (code.outputs ?? []).filter(o => o.output_type !== 'error')
  };
}
