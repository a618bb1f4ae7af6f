/**
 * One notebook's conversation: the messages, the request in flight, and how a question becomes
 * a `chat` request (history + notebook context). No DOM here; the view renders it.
 */
import { UUID } from '@lumino/coreutils';
import type { IDisposable } from '@lumino/disposable';
import { ISignal, Signal } from '@lumino/signaling';

import { CodeLlamaClient, CodeLlamaError, IPendingRequest } from '../client';
import { buildContext, IContextOptions, INotebookSnapshot } from '../context';
import type {
  ChatTask,
  IChatMessage,
  IChatRequest,
  IContextPreview,
  IGenerationResult
} from '../protocol';

export type EntryState = 'streaming' | 'done' | 'cancelled' | 'error';

export interface IChatEntry {
  id: string;
  role: 'user' | 'assistant';
  /** Markdown (assistant) or plain text (user). */
  content: string;
  state: EntryState;
  /** Why an answer failed (state `error`). */
  error?: string;
  /** User entries: the context that went with the question, for display. */
  context?: string[];
  /** Assistant entries: figures from the kernel's `done`. */
  stats?: { generatedTokens: number; tokensPerS: number; promptTokens: number };
}

/** Generation settings the conversation reads at each question. */
export interface IChatSettings {
  temperature: number;
  maxNewTokens: number;
  /** Past messages sent with each question (the kernel trims to its window). */
  historyMessages: number;
}

export const DEFAULT_CHAT_SETTINGS: IChatSettings = {
  temperature: 0.2,
  maxNewTokens: 512,
  historyMessages: 10
};

export class ChatModel implements IDisposable {
  constructor(options: ChatModel.IOptions) {
    this._client = options.client;
    this._snapshot = options.snapshot;
    this._settings = options.settings;
  }

  get messages(): readonly IChatEntry[] {
    return this._messages;
  }

  /** Whether an answer is being generated. */
  get busy(): boolean {
    return this._sending;
  }

  /** The text in the question box, kept per notebook. */
  get draft(): string {
    return this._draft;
  }

  set draft(value: string) {
    if (value !== this._draft) {
      this._draft = value;
      this._changed.emit();
    }
  }

  /** Emitted on every change, a streamed chunk included. */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  get isDisposed(): boolean {
    return this._isDisposed;
  }

  /**
   * Ask `question` with the notebook context chosen by `context`; resolves when the answer is
   * complete (or stopped, or failed: the entry says which).
   */
  async send(
    question: string,
    context: IContextOptions,
    options: ChatModel.ISendOptions = {}
  ): Promise<void> {
    const text = question.trim();
    if (!text || this._sending) {
      return;
    }
    this._sending = true;
    try {
      await this._send(text, context, options);
    } finally {
      this._sending = false;
      this._stopRequested = false;
      this._changed.emit();
    }
  }

  private async _send(
    text: string,
    context: IContextOptions,
    options: ChatModel.ISendOptions
  ): Promise<void> {
    const client = this._client();
    const task = options.task ?? 'chat';
    const { request, labels } = this._buildRequest(text, context, task);
    this._messages.push({
      id: UUID.uuid4(),
      role: 'user',
      content: text,
      state: 'done',
      context: labels
    });
    const answer: IChatEntry = {
      id: UUID.uuid4(),
      role: 'assistant',
      content: '',
      state: 'streaming'
    };
    this._messages.push(answer);
    this._changed.emit();

    if (!client) {
      this._fail(answer, 'Open a notebook with a running kernel first.');
      return;
    }
    try {
      if (options.beforeSend) {
        await options.beforeSend();
      }
    } catch (error) {
      this._fail(answer, Private.describe(error));
      return;
    }
    if (this._stopRequested) {
      answer.state = 'cancelled';
      return;
    }
    const pending = client.request(task, request, {
      onChunk: chunk => {
        answer.content += chunk;
        this._changed.emit();
      }
    });
    this._request = pending;
    this._changed.emit();
    try {
      const result: IGenerationResult = await pending.done;
      answer.content = result.text || answer.content;
      answer.state = result.stop_reason === 'cancelled' ? 'cancelled' : 'done';
      answer.stats = {
        generatedTokens: result.generated_tokens,
        tokensPerS: result.timings?.tokens_per_s ?? 0,
        promptTokens: result.prompt_tokens
      };
    } catch (error) {
      if (
        this._stopRequested &&
        error instanceof CodeLlamaError &&
        error.code !== 'kernel_busy'
      ) {
        answer.state = 'cancelled';
      } else {
        this._fail(answer, Private.describe(error), false);
      }
    } finally {
      this._request = null;
      this._saved.emit();
    }
  }

  /** Stop the answer being generated (sends `cancel`). */
  stop(): void {
    if (this._sending) {
      this._stopRequested = true;
      this._request?.cancel();
    }
  }

  /** Start a new conversation (stops the current answer). */
  clear(): void {
    this.stop();
    this._messages = [];
    this._changed.emit();
    this._saved.emit();
  }

  /** What the kernel would see for `question` (its `context-preview` reply). */
  async preview(
    question: string,
    context: IContextOptions
  ): Promise<IContextPreview> {
    const client = this._client();
    if (!client) {
      throw new CodeLlamaError(
        'no_kernel',
        'Open a notebook with a running kernel first.'
      );
    }
    const { request } = this._buildRequest(question.trim() || '…', context);
    const reply = await client.request('context-preview', {
      for: 'chat',
      ...request
    }).done;
    return reply.preview;
  }

  /** Emitted when the conversation should be persisted. */
  get saveRequested(): ISignal<this, void> {
    return this._saved;
  }

  toJSON(): IChatEntry[] {
    return this._messages
      .filter(m => m.state !== 'streaming')
      .map(m => ({ ...m }));
  }

  /** Restore a saved conversation (only while this one is empty). */
  restore(entries: IChatEntry[]): void {
    if (this._messages.length > 0 || !Array.isArray(entries)) {
      return;
    }
    this._messages = entries.filter(e => e && typeof e.content === 'string');
    this._changed.emit();
  }

  dispose(): void {
    if (this._isDisposed) {
      return;
    }
    this._isDisposed = true;
    this.stop();
    Signal.clearData(this);
  }

  /**
   * A `chat` request carries the question; `explain` and `fix` carry only the conversation so
   * far, since the kernel words those questions about the active cell itself.
   */
  private _buildRequest(
    question: string,
    context: IContextOptions,
    task: ChatTask = 'chat'
  ): { request: IChatRequest; labels: string[] } {
    const snapshot = this._snapshot();
    const built = buildContext(snapshot, context);
    const content = built.selection
      ? `${question}\n\nThe selected code:\n\`\`\`\n${built.selection}\n\`\`\``
      : question;
    const history = Private.history(
      this._messages,
      this._settings().historyMessages
    );
    const settings = this._settings();
    const asked: IChatMessage[] =
      task === 'chat' ? [{ role: 'user', content }] : [];
    const request: IChatRequest = {
      messages: [...history, ...asked],
      max_new_tokens: settings.maxNewTokens,
      temperature: settings.temperature,
      ...built.fields
    };
    return {
      request,
      labels: Private.labels(
        built.fields.cells?.length ?? 0,
        context,
        !!built.selection
      )
    };
  }

  private _fail(entry: IChatEntry, message: string, emit = true): void {
    entry.state = 'error';
    entry.error = message;
    if (emit) {
      this._changed.emit();
    }
  }

  private _client: () => CodeLlamaClient | null;
  private _snapshot: () => INotebookSnapshot | null;
  private _settings: () => IChatSettings;
  private _messages: IChatEntry[] = [];
  private _draft = '';
  private _request: IPendingRequest<ChatTask> | null = null;
  private _sending = false;
  private _stopRequested = false;
  private _isDisposed = false;
  private _changed = new Signal<this, void>(this);
  private _saved = new Signal<this, void>(this);
}

export namespace ChatModel {
  export interface IOptions {
    /** The notebook's kernel link (null without a notebook). */
    client: () => CodeLlamaClient | null;
    /** Reads the notebook at the moment a question is sent. */
    snapshot: () => INotebookSnapshot | null;
    settings: () => IChatSettings;
  }

  export interface ISendOptions {
    /** Runs before the chat request (e.g. load the chosen model); a throw fails the answer. */
    beforeSend?: () => Promise<void>;
    /** `explain` / `fix`: the kernel words the question about the active cell; the question
     * given is what the conversation shows. */
    task?: ChatTask;
  }
}

namespace Private {
  /**
   * Past turns as the kernel expects them: user/assistant pairs, oldest first. A question whose
   * answer failed is left out with it; a stopped answer goes in as far as it got.
   */
  export function history(
    entries: readonly IChatEntry[],
    limit: number
  ): IChatMessage[] {
    const pairs: IChatMessage[][] = [];
    for (let i = 0; i + 1 < entries.length; i++) {
      const [question, answer] = [entries[i], entries[i + 1]];
      if (
        question.role === 'user' &&
        answer.role === 'assistant' &&
        (answer.state === 'done' || answer.state === 'cancelled') &&
        answer.content
      ) {
        pairs.push([
          { role: 'user', content: question.content },
          { role: 'assistant', content: answer.content }
        ]);
        i++;
      }
    }
    const keep = Math.max(0, Math.floor(limit / 2));
    return (keep > 0 ? pairs.slice(-keep) : []).flat();
  }

  export function describe(error: unknown): string {
    if (error instanceof CodeLlamaError) {
      return error.message;
    }
    return error instanceof Error ? error.message : String(error);
  }

  export function labels(
    cells: number,
    context: IContextOptions,
    selection: boolean
  ): string[] {
    const out: string[] = [];
    if (context.notebook && cells > 0) {
      out.push(`notebook (${cells} cells)`);
    } else if (cells > 0) {
      out.push(cells === 1 ? '1 cell' : `${cells} cells`);
    }
    if (selection) {
      out.push('selection');
    }
    if (context.variables) {
      out.push('variables');
    }
    return out;
  }
}
