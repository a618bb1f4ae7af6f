/**
 * The "Code Llama" inline completion provider: ghost text from the model in the notebook's
 * kernel. Each request sends the cell's text around the cursor plus the notebook's other cells
 * (sources only) over the kernel link; the kernel fills in the middle (Code Llama's
 * `<PRE> <SUF> <MID>`) or continues the prefix for models that cannot, reusing its KV cache
 * across keystrokes. The answer streams in as ghost text; a new keystroke cancels it.
 */
import type {
  CompletionHandler,
  IInlineCompletionContext,
  IInlineCompletionItem,
  IInlineCompletionList,
  IInlineCompletionProvider
} from '@jupyterlab/completer';
import type * as nbformat from '@jupyterlab/nbformat';
import type { ISettingRegistry } from '@jupyterlab/settingregistry';
import type { LabIcon } from '@jupyterlab/ui-components';
import type { JSONValue } from '@lumino/coreutils';

import { CodeLlamaClient, CodeLlamaError, IPendingRequest } from '../client';
import type { ICompleteRequest, IGenerationResult } from '../protocol';
import {
  autoTriggerBlock,
  DEFAULT_INLINE_SETTINGS,
  IInlineSettings,
  readSettings
} from './triggers';

/** What the provider needs to know about the editor the request comes from. */
export interface IEditorTarget {
  /** The link to the kernel of the notebook / console, or null when there is none. */
  client: CodeLlamaClient | null;
  /** `code`, `markdown` or `raw` for the active cell; `code` outside notebooks. */
  cellType: string;
  /** The notebook's cells (sources only) and the index of the active one, when in a notebook. */
  cells?: nbformat.ICell[];
  current?: number;
}

/** Finds the kernel link and the notebook around an inline completion request. */
export type TargetResolver = (context: IInlineCompletionContext) => IEditorTarget | null;

/** Code points of `text` up to `offset` (JupyterLab counts characters, not UTF-16 units). */
export function splitAtCharOffset(text: string, offset: number): [string, string] {
  const chars = Array.from(text);
  return [chars.slice(0, offset).join(''), chars.slice(offset).join('')];
}

/** InlineCompletionTriggerKind.Invoke (a const enum value, kept here to avoid a runtime import). */
const INVOKE = 0;

/** One answer on its way: the text so far, and a way to wait for more. */
class PendingAnswer {
  /** Whether several lines may show; the kernel decides and says so in each chunk. */
  multiline = false;

  /** The kernel request, attached once sent. */
  request: IPendingRequest<'complete'> | null = null;
  raw = '';
  final: string | null = null;
  error: CodeLlamaError | null = null;
  result: IGenerationResult | null = null;

  get finished(): boolean {
    return this.final !== null || this.error !== null;
  }

  /** What to show while streaming: one line unless several are wanted. */
  get shown(): string {
    if (this.final !== null) {
      return this.final;
    }
    return this.multiline ? this.raw : this.raw.split('\n', 1)[0];
  }

  push(delta: string, multiline?: boolean): void {
    this.multiline = multiline ?? this.multiline;
    this.raw += delta;
    this._wake();
  }

  finish(text: string, result: IGenerationResult | null): void {
    if (!this.finished) {
      this.final = text;
      this.result = result;
      this._wake();
    }
  }

  fail(error: CodeLlamaError): void {
    if (!this.finished) {
      this.error = error;
      this._wake();
    }
  }

  /** Resolves at the next change (or at once when finished). */
  changed(): Promise<void> {
    if (this.finished) {
      return Promise.resolve();
    }
    return new Promise(resolve => this._waiters.push(resolve));
  }

  private _wake(): void {
    const waiters = this._waiters;
    this._waiters = [];
    waiters.forEach(resolve => resolve());
  }

  private _waiters: (() => void)[] = [];
}

export class CodeLlamaInlineProvider implements IInlineCompletionProvider {
  constructor(options: CodeLlamaInlineProvider.IOptions) {
    this._resolve = options.resolve;
    this.icon = options.icon;
  }

  readonly identifier = CodeLlamaInlineProvider.ID;
  readonly name = 'Code Llama';
  readonly icon?: LabIcon.ILabIcon;

  /** Shown in Settings → Inline Completer, next to JupyterLab's own enabled/debounce/timeout. */
  readonly schema: ISettingRegistry.IProperty = {
    default: {
      // JupyterLab's per-provider settings, with defaults that suit a local model.
      debouncerDelay: 150,
      timeout: 15000,
      // Our own rule (maxCharsRightOfCursor) decides about text right of the cursor.
      autoFillInMiddle: true,
      ...DEFAULT_INLINE_SETTINGS
    },
    properties: {
      maxTokens: {
        title: 'Maximum suggestion length (tokens)',
        type: 'number',
        minimum: 1,
        maximum: 512
      },
      maxTimeMs: {
        title: 'Time limit per suggestion (ms)',
        description: 'Generation stops after this long; what came so far is shown.',
        type: 'number',
        minimum: 100
      },
      multiline: {
        title: 'Multi-line suggestions',
        description:
          'auto: several lines on an empty line, after ":" or after a comment, else the rest of the line.',
        type: 'string',
        enum: ['auto', 'always', 'never']
      },
      maxCharsRightOfCursor: {
        title: 'Most characters right of the cursor for typing to trigger',
        type: 'number',
        minimum: 0
      },
      triggerInComments: { title: 'Trigger inside comments', type: 'boolean' },
      triggerInStrings: { title: 'Trigger inside strings', type: 'boolean' },
      triggerOnNewLine: {
        title: 'Suggest on a new line after a comment or ":"',
        type: 'boolean'
      },
      notebookContext: { title: 'Send the other cells as context', type: 'boolean' },
      variables: { title: 'Send live variables as context', type: 'boolean' },
      prewarm: {
        title: 'Prefill the context when a cell gets the focus',
        description: 'Makes the first suggestion in a cell faster; uses the model briefly.',
        type: 'boolean'
      }
    }
  };

  get settings(): IInlineSettings {
    return this._settings;
  }

  /** Whether JupyterLab has this provider switched on (its `enabled` setting). */
  get enabled(): boolean {
    return this._enabled;
  }

  configure(settings: { [property: string]: JSONValue }): void {
    this._settings = readSettings(settings as { [key: string]: unknown });
    this._enabled = settings.enabled !== false;
  }

  async fetch(
    request: CompletionHandler.IRequest,
    context: IInlineCompletionContext
  ): Promise<IInlineCompletionList<IInlineCompletionItem>> {
    const explicit = context.triggerKind === INVOKE;
    // Whatever happens below, the previous answer is now stale: stop it in the kernel.
    this._cancelCurrent();
    const target = this._resolve(context);
    if (!target || !target.client || target.cellType !== 'code') {
      return { items: [] };
    }
    const [prefix, suffix] = splitAtCharOffset(request.text, request.offset);
    const settings = this._settings;
    if (!explicit && autoTriggerBlock({ prefix, suffix, cellType: target.cellType }, settings)) {
      return { items: [] };
    }
    const client = target.client;
    if (client.state !== 'ready' || client.status?.state !== 'ready') {
      return explicit ? Private.errorList(Private.notReadyMessage(client)) : { items: [] };
    }
    const body: ICompleteRequest = {
      prefix,
      suffix,
      ...Private.multiline(settings.multiline, explicit),
      max_new_tokens: settings.maxTokens,
      max_time_ms: settings.maxTimeMs,
      temperature: 0,
      variables: settings.variables,
      ...this._cellContext(target)
    };
    const answer = new PendingAnswer();
    const pending = client.request('complete', body, {
      onChunk: (text, chunk) => answer.push(text, chunk.multiline)
    });
    answer.request = pending;
    this._current = answer;
    pending.done.then(
      result => {
        this._lastResult = result;
        answer.finish(result.text, result);
      },
      error => answer.fail(error instanceof CodeLlamaError ? error : new CodeLlamaError('internal', String(error)))
    );

    // Wait for something worth showing: visible text, the end, or an error.
    while (!answer.finished && answer.shown.trim() === '') {
      await answer.changed();
    }
    if (this._current !== answer) {
      return { items: [] }; // superseded by a newer keystroke
    }
    if (answer.error) {
      // Typing stays quiet (the model may be busy answering the chat); Alt+\ says why.
      this._current = null;
      return explicit ? Private.errorList(answer.error.message) : { items: [] };
    }
    if (answer.finished) {
      this._current = null;
      // Whitespace alone is no suggestion (Tab would insert an invisible line break).
      return answer.final?.trim() ? { items: [{ insertText: answer.final }] } : { items: [] };
    }
    const token = pending.requestId;
    this._streams.set(token, answer);
    return { items: [{ insertText: answer.shown, isIncomplete: true, token }] };
  }

  async *stream(token: string): AsyncGenerator<{ response: IInlineCompletionItem }> {
    const answer = this._streams.get(token);
    if (!answer) {
      return;
    }
    try {
      let last = answer.shown;
      while (!answer.finished) {
        await answer.changed();
        if (answer.error) {
          return; // cancelled by a newer keystroke, or the link broke: keep what is shown
        }
        const shown = answer.shown;
        if (shown !== last) {
          last = shown;
          yield { response: { insertText: shown } };
        }
      }
      if (answer.final !== null && answer.final !== last) {
        yield { response: { insertText: answer.final.trim() ? answer.final : '' } };
      }
    } finally {
      this._streams.delete(token);
      if (this._current === answer) {
        this._current = null;
      }
    }
  }

  /** The last finished answer's result (stages, cached tokens), for tests and diagnostics. */
  get lastResult(): IGenerationResult | null {
    return this._lastResult;
  }

  /** Ask the kernel to fill its cache with this cell's context (a cell got the focus). */
  prewarm(target: IEditorTarget, source: string): void {
    const client = target.client;
    if (
      !this._enabled ||
      !this._settings.prewarm ||
      !client ||
      target.cellType !== 'code' ||
      client.state !== 'ready' ||
      client.status?.state !== 'ready' ||
      client.status.busy
    ) {
      return;
    }
    const body: ICompleteRequest = {
      prefix: source,
      suffix: '',
      max_new_tokens: 1,
      variables: this._settings.variables,
      ...this._cellContext(target)
    };
    client.request('prewarm', body).done.catch(() => undefined);
  }

  private _cellContext(target: IEditorTarget): Partial<ICompleteRequest> {
    if (!this._settings.notebookContext || !target.cells || target.current === undefined) {
      return {};
    }
    return { cells: target.cells, current: target.current };
  }

  private _cancelCurrent(): void {
    const current = this._current;
    this._current = null;
    if (current) {
      current.request?.cancel();
      current.fail(new CodeLlamaError('internal', 'superseded'));
    }
  }

  private _resolve: TargetResolver;
  private _settings: IInlineSettings = { ...DEFAULT_INLINE_SETTINGS };
  private _enabled = true;
  private _current: PendingAnswer | null = null;
  private _streams = new Map<string, PendingAnswer>();
  private _lastResult: IGenerationResult | null = null;
}

export namespace CodeLlamaInlineProvider {
  export const ID = 'jupyter-codellama:inline';

  export interface IOptions {
    resolve: TargetResolver;
    icon?: LabIcon.ILabIcon;
  }
}

namespace Private {
  /**
   * The request's `multiline`: the user's setting, or, on `auto`, none (the kernel decides from
   * the prefix), except that Alt+\ asks for a block.
   */
  export function multiline(
    setting: IInlineSettings['multiline'],
    explicit: boolean
  ): Pick<ICompleteRequest, 'multiline'> {
    if (setting !== 'auto') {
      return { multiline: setting === 'always' };
    }
    return explicit ? { multiline: true } : {};
  }

  export function errorList(message: string): IInlineCompletionList<IInlineCompletionItem> {
    return { items: [{ insertText: '', error: { message } }] };
  }

  export function notReadyMessage(client: CodeLlamaClient): string {
    if (client.state !== 'ready') {
      return client.message || 'The kernel has not loaded jupyter-codellama.';
    }
    if (client.status?.state === 'loading') {
      return 'The model is still loading.';
    }
    return 'No model is loaded: load one from the Code Llama sidebar.';
  }
}
