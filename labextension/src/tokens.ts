/**
 * Tokens shared between this extension's plugins (and any other extension, e.g. a future
 * inline completion provider that asks `ICodeLlamaClient` for the notebook's kernel link).
 */
import type { ISessionContext } from '@jupyterlab/apputils';
import type { NotebookPanel } from '@jupyterlab/notebook';
import { Token } from '@lumino/coreutils';

import type { CodeLlamaClient } from './client';
import type { IContextOptions } from './context';
import type { ChatTask } from './protocol';

/** One `CodeLlamaClient` per session context (that is, per kernel). */
export interface ICodeLlamaClient {
  /** The link to this session's kernel, created on first use and kept until it is disposed. */
  forSession(sessionContext: ISessionContext): CodeLlamaClient;
}

export const ICodeLlamaClient = new Token<ICodeLlamaClient>(
  'jupyter-codellama:ICodeLlamaClient',
  'The link (one comm) to the jupyter-codellama extension in each notebook kernel.'
);

/** What the commands need from the chat sidebar. */
export interface ICodeLlamaChat {
  /** Reveal the sidebar and put the focus in its question box. */
  open(): void;
  /**
   * Ask `question` about `notebook` in its conversation. `context` overrides the chips for
   * this one question (e.g. "Explain cell" always sends the active cell).
   */
  ask(
    notebook: NotebookPanel,
    question: string,
    context?: Partial<IContextOptions>,
    task?: ChatTask
  ): Promise<void>;
  /** Put `text` in the question box without sending it. */
  draft(notebook: NotebookPanel, text: string): void;
}

export const ICodeLlamaChat = new Token<ICodeLlamaChat>(
  'jupyter-codellama:ICodeLlamaChat',
  'The chat sidebar: ask a question about a notebook.'
);

/** Every command of this extension. */
export namespace CommandIDs {
  export const openChat = 'codellama:open-chat';
  export const explainCell = 'codellama:explain-cell';
  export const fixError = 'codellama:fix-error';
  export const generateFromComment = 'codellama:generate-from-comment';
  export const askSelection = 'codellama:ask-selection';
  export const editCell = 'codellama:edit-cell';
  export const acceptWord = 'codellama:accept-next-word';
  export const acceptLine = 'codellama:accept-line';
}
