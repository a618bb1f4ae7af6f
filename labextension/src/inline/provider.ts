/**
 * The "Code Llama" inline completion provider: ghost text from the model in the notebook's
 * kernel. Each request sends the cell's text around the cursor plus the notebook's other cells
 * (sources only) over the kernel link; the kernel fills in the middle (Code Llama's
 * `<PRE> <SUF> <MID>`) or continues the prefix for models that cannot, reusing its KV cache
 * across keystrokes. The answer streams in as ghost text; a new keystroke cancels it.
 *
 * The provider holds the suggestion it showed: typing what it shows, or accepting a part of it
 * (see `accept.ts`), is answered with the rest at once, without the kernel. Once it has been
 * accepted to its end, the continuation is prefetched, so the next ghost text comes from the
 * kernel's store instead of the model.
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
  nextRequest,
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
export type TargetResolver = (
  context: IInlineCompletionContext
) => IEditorTarget | null;

/** Code points of `text` up to `offset` (JupyterLab counts characters, not UTF-16 units). */
export function splitAtCharOffset(
  text: string,
  offset: number
): [string, string] {
  const chars = Array.from(text);
  return [chars.slice(0, offset).join(''), chars.slice(offset).join('')];
}

/** A suggestion on screen: where it was asked for, its text so far, and whether that is all. */
interface IShownSuggestion {
  prefix: string;
  suffix: string;
  text: string;
  finished: boolean;
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
        description:
          'Generation stops after this long; what came so far is shown.',
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
      notebookContext: {
        title: 'Send the other cells as context',
        type: 'boolean'
      },
      variables: { title: 'Send live variables as context', type: 'boolean' },
      prewarm: {
        title: 'Prefill the context when a cell gets the focus',
        description:
          'Makes the first suggestion in a cell faster; uses the model briefly.',
        type: 'boolean'
      },
      prefetch: {
        title: 'Prepare the next suggestion after one is accepted',
        description:
          'Asks for the continuation in the background, so that it shows at once.',
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
    // Typed through, or accepted in part: the rest of what is shown, without the kernel.
    const rest = this.remaining(prefix, suffix, { finished: true });
    if (rest) {
      return { items: [{ insertText: rest }] };
    }
    const settings = this._settings;
    if (
      !explicit &&
      autoTriggerBlock({ prefix, suffix, cellType: target.cellType }, settings)
    ) {
      return { items: [] };
    }
    const client = target.client;
    if (!Private.ready(client)) {
      return explicit
        ? Private.errorList(Private.notReadyMessage(client))
        : { items: [] };
    }
    const answer = this._ask(
      client,
      this._body(target, prefix, suffix, explicit)
    );
    this._current = answer;

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
      const text = answer.final?.trim() ? answer.final : '';
      this._show(answer, prefix, suffix, text, true);
      return text ? { items: [{ insertText: text }] } : { items: [] };
    }
    const token = answer.request!.requestId;
    this._streams.set(token, answer);
    this._show(answer, prefix, suffix, answer.shown, false);
    return { items: [{ insertText: answer.shown, isIncomplete: true, token }] };
  }

  async *stream(
    token: string
  ): AsyncGenerator<{ response: IInlineCompletionItem }> {
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
          this._showUpdate(answer, shown, false);
          yield { response: { insertText: shown } };
        }
      }
      if (answer.final !== null) {
        const final = answer.final.trim() ? answer.final : '';
        this._showUpdate(answer, final, true);
        if (final !== last) {
          yield { response: { insertText: final } };
        }
      }
    } finally {
      this._streams.delete(token);
      if (this._current === answer) {
        this._current = null;
      }
    }
  }

  /**
   * What is left of the suggestion on screen with the cursor between `prefix` and `suffix`
   * (the user typed or accepted its start), or null. `finished`: only a suggestion that came
   * to its end (a streaming one is still growing).
   */
  remaining(
    prefix: string,
    suffix: string,
    options: { finished?: boolean } = {}
  ): string | null {
    const shown = this._shown;
    if (!shown || (options.finished && !shown.finished)) {
      return null;
    }
    if (suffix !== shown.suffix || !prefix.startsWith(shown.prefix)) {
      return null;
    }
    const typed = prefix.slice(shown.prefix.length);
    if (!shown.text.startsWith(typed)) {
      return null;
    }
    const rest = shown.text.slice(typed.length);
    return rest.trim() ? rest : null;
  }

  /**
   * The cell's text changed, the cursor now between `prefix` and `suffix`. When that puts the
   * whole suggestion in place (Tab, or typed or accepted to its end), ask the kernel for the
   * continuation now, in the background, with exactly the request that will come next.
   * `resolve` gives the editor's target (only called then: it reads the whole notebook).
   */
  edited(
    resolve: () => IEditorTarget | null,
    prefix: string,
    suffix: string
  ): void {
    const shown = this._shown;
    if (
      !shown?.finished ||
      suffix !== shown.suffix ||
      prefix !== shown.prefix + shown.text
    ) {
      return;
    }
    this._shown = null; // taken: the next suggestion replaces it
    const next = nextRequest(prefix, suffix, this._settings);
    const target =
      this._enabled && this._settings.prefetch && next ? resolve() : null;
    const client = target?.client;
    if (
      !target ||
      !client ||
      target.cellType !== 'code' ||
      !next ||
      !Private.ready(client)
    ) {
      return;
    }
    const body = {
      ...this._body(target, prefix, suffix, next.explicit),
      prefetch: true
    };
    client.request('complete', body).done.catch(() => undefined);
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
      !Private.ready(client) ||
      client.status?.busy
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

  /** Send `body` to the kernel; the answer fills in as replies come. */
  private _ask(client: CodeLlamaClient, body: ICompleteRequest): PendingAnswer {
    const answer = new PendingAnswer();
    const pending = client.request('complete', body, {
      onChunk: (text, chunk) => answer.push(text, chunk.multiline)
    });
    answer.request = pending;
    pending.done.then(
      result => {
        this._lastResult = result;
        answer.finish(result.text, result);
      },
      error =>
        answer.fail(
          error instanceof CodeLlamaError
            ? error
            : new CodeLlamaError('internal', String(error))
        )
    );
    return answer;
  }

  /** The request for a suggestion at (prefix, suffix): one builder, so a prefetch sends the same. */
  private _body(
    target: IEditorTarget,
    prefix: string,
    suffix: string,
    explicit: boolean
  ): ICompleteRequest {
    const settings = this._settings;
    return {
      prefix,
      suffix,
      ...Private.multiline(settings.multiline, explicit),
      max_new_tokens: settings.maxTokens,
      max_time_ms: settings.maxTimeMs,
      temperature: 0,
      variables: settings.variables,
      ...this._cellContext(target)
    };
  }

  private _show(
    answer: PendingAnswer,
    prefix: string,
    suffix: string,
    text: string,
    finished: boolean
  ): void {
    this._shown = text ? { prefix, suffix, text, finished } : null;
    this._shownAnswer = answer;
  }

  /** A streamed answer grew or ended: what is shown of it, if it is still the one on screen. */
  private _showUpdate(
    answer: PendingAnswer,
    text: string,
    finished: boolean
  ): void {
    const shown = this._shown;
    if (shown && this._shownAnswer === answer) {
      this._show(answer, shown.prefix, shown.suffix, text, finished);
    }
  }

  private _cellContext(target: IEditorTarget): Partial<ICompleteRequest> {
    if (
      !this._settings.notebookContext ||
      !target.cells ||
      target.current === undefined
    ) {
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
  private _shown: IShownSuggestion | null = null;
  private _shownAnswer: PendingAnswer | null = null;
}

export namespace CodeLlamaInlineProvider {
  export const ID = 'jupyter-codellama:inline';

  export interface IOptions {
    resolve: TargetResolver;
    icon?: LabIcon.ILabIcon;
  }
}

namespace Private {
  /** Whether the kernel link is up and a model is loaded. */
  export function ready(client: CodeLlamaClient): boolean {
    return client.state === 'ready' && client.status?.state === 'ready';
  }

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

  export function errorList(
    message: string
  ): IInlineCompletionList<IInlineCompletionItem> {
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
