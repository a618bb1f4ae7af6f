/**
 * When inline completion may start on its own. Pure functions over the cell's text, so the
 * rules are tested without an editor. (Whether a suggestion may span several lines is the
 * kernel's decision: see `wants_multiline` in comm.py.)
 */

/** The inline completion settings (JupyterLab's Settings → Inline Completer → Code Llama). */
export interface IInlineSettings {
  /** Most tokens one suggestion may have. */
  maxTokens: number;
  /** Stop generating after this long (ms); what came so far is shown. */
  maxTimeMs: number;
  /** `auto`: the kernel decides (several lines on an empty line, after `:` or a comment). */
  multiline: 'auto' | 'always' | 'never';
  /** Typing may trigger a suggestion with at most this many characters right of the cursor. */
  maxCharsRightOfCursor: number;
  /** Trigger while the cursor is inside a comment. */
  triggerInComments: boolean;
  /** Trigger while the cursor is inside a string literal. */
  triggerInStrings: boolean;
  /** Suggest on a new line after a comment or a line ending in `:` (where JupyterLab does not). */
  triggerOnNewLine: boolean;
  /** Send the other cells (sources only) as context. */
  notebookContext: boolean;
  /** Send live variables (names, types, shapes, columns) as context. */
  variables: boolean;
  /** Prefill the notebook context into the model's cache when a code cell gets the focus. */
  prewarm: boolean;
  /** After a suggestion is accepted, ask for the next one in the background. */
  prefetch: boolean;
}

export const DEFAULT_INLINE_SETTINGS: IInlineSettings = {
  maxTokens: 64,
  maxTimeMs: 3000,
  multiline: 'auto',
  maxCharsRightOfCursor: 3,
  triggerInComments: false,
  triggerInStrings: false,
  triggerOnNewLine: true,
  notebookContext: true,
  variables: true,
  prewarm: true,
  prefetch: true
};

/** Where the cursor is in Python source. */
export type Scope = 'code' | 'comment' | 'string';

/**
 * The scope at the end of `prefix` (the cell's text up to the cursor): a small Python lexer
 * that knows comments, the four quote styles, backslash escapes and line continuations.
 */
export function scopeAt(prefix: string): Scope {
  let i = 0;
  const n = prefix.length;
  while (i < n) {
    const c = prefix[i];
    if (c === '#') {
      const end = prefix.indexOf('\n', i);
      if (end === -1) {
        return 'comment';
      }
      i = end + 1;
      continue;
    }
    if (c === '"' || c === "'") {
      const triple = prefix.startsWith(c.repeat(3), i);
      const quote = triple ? c.repeat(3) : c;
      let j = i + quote.length;
      let closed = false;
      while (j < n) {
        const d = prefix[j];
        if (d === '\\') {
          j += 2;
          continue;
        }
        if (!triple && d === '\n') {
          // An unterminated single-quoted string ends at the line's end (a syntax error).
          break;
        }
        if (prefix.startsWith(quote, j)) {
          closed = true;
          j += quote.length;
          break;
        }
        j += 1;
      }
      if (!closed && (j >= n || triple)) {
        return 'string';
      }
      i = j;
      continue;
    }
    i += 1;
  }
  return 'code';
}

/** The request the editor gives: the cell's text around the cursor and what kind of cell. */
export interface ITriggerInput {
  prefix: string;
  suffix: string;
  /** `code`, `markdown` or `raw`; a console or file editor counts as `code`. */
  cellType: string;
}

/** Why an automatic trigger is refused, or null when it may go ahead. */
export type BlockReason =
  'not-code' | 'empty' | 'comment' | 'string' | 'text-right-of-cursor' | null;

/**
 * Whether typing may trigger a suggestion here. An explicit request (Alt+\) ignores every rule
 * but the cell type.
 */
export function autoTriggerBlock(
  input: ITriggerInput,
  settings: IInlineSettings
): BlockReason {
  if (input.cellType !== 'code') {
    return 'not-code';
  }
  if (input.prefix.trim() === '') {
    return 'empty';
  }
  const rest = input.suffix.split('\n', 1)[0];
  if (rest.trim().length > settings.maxCharsRightOfCursor) {
    return 'text-right-of-cursor';
  }
  const scope = scopeAt(input.prefix);
  if (scope === 'comment' && !settings.triggerInComments) {
    return 'comment';
  }
  if (scope === 'string' && !settings.triggerInStrings) {
    return 'string';
  }
  return null;
}

/** The line the cursor is on, up to the cursor. */
export function currentLine(prefix: string): string {
  return prefix.slice(prefix.lastIndexOf('\n') + 1);
}

/**
 * The request that comes by itself with the cursor here, or null when none does: JupyterLab
 * asks (automatically) after an edit unless the cursor's line is blank up to it; there our
 * new-line trigger asks (explicitly) after a comment or a `:`. A prefetch must send the same.
 */
export function nextRequest(
  prefix: string,
  suffix: string,
  settings: IInlineSettings
): { explicit: boolean } | null {
  if (currentLine(prefix).trim() === '') {
    return settings.triggerOnNewLine && newLineTrigger(prefix, suffix)
      ? { explicit: true }
      : null;
  }
  if (autoTriggerBlock({ prefix, suffix, cellType: 'code' }, settings)) {
    return null;
  }
  return { explicit: false };
}

/** Brackets left open on `line` (quoted text ignored): `{"a": 1, "b":` ends with ':' but opens no block. */
export function bracketDepth(line: string): number {
  let depth = 0;
  let quote: string | null = null;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (quote) {
      if (c === '\\') {
        i++;
      } else if (c === quote) {
        quote = null;
      }
    } else if (c === '"' || c === "'") {
      quote = c;
    } else if (c === '#') {
      break;
    } else if ('([{'.includes(c)) {
      depth++;
    } else if (')]}'.includes(c)) {
      depth = Math.max(0, depth - 1);
    }
  }
  return depth;
}

/**
 * After an edit, whether to ask for a suggestion although JupyterLab does not trigger on a
 * blank line: the cursor is on a new, blank line (indentation only) right after a comment line
 * or a line ending in `:` — the moment a user expects the code they just described.
 */
export function newLineTrigger(prefix: string, suffix: string): boolean {
  const lines = prefix.split('\n');
  if (lines.length < 2) {
    return false;
  }
  const here = lines[lines.length - 1];
  const rest = suffix.split('\n', 1)[0];
  if (here.trim() !== '' || rest.trim() !== '') {
    return false;
  }
  const previous = lines[lines.length - 2].trim();
  if (previous === '') {
    return false;
  }
  if (previous.startsWith('#')) {
    return true;
  }
  return (
    previous.endsWith(':') &&
    bracketDepth(previous) === 0 &&
    scopeAt(lines.slice(0, -1).join('\n')) === 'code'
  );
}

/** Merge stored settings over the defaults, ignoring values of the wrong type. */
export function readSettings(
  raw: { [key: string]: unknown } | null | undefined
): IInlineSettings {
  const out: IInlineSettings = { ...DEFAULT_INLINE_SETTINGS };
  if (!raw) {
    return out;
  }
  for (const key of Object.keys(
    DEFAULT_INLINE_SETTINGS
  ) as (keyof IInlineSettings)[]) {
    const value = raw[key];
    const fallback = DEFAULT_INLINE_SETTINGS[key];
    if (typeof value !== typeof fallback) {
      continue;
    }
    if (
      key === 'multiline' &&
      !['auto', 'always', 'never'].includes(value as string)
    ) {
      continue;
    }
    if (typeof value === 'number' && (!Number.isFinite(value) || value < 0)) {
      continue;
    }
    (out as any)[key] = value;
  }
  return out;
}
