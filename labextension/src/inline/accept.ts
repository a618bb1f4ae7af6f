/**
 * Accepting ghost text in parts: the next word or the rest of the line. JupyterLab's inline
 * completer accepts a suggestion only whole (JupyterLab issue 15531); these insert a part of
 * ours at the cursor, and the provider answers the next request with what is left of the
 * suggestion it holds, so the rest stays shown without a model call.
 */
import { splitAtCharOffset } from './provider';

export type AcceptUnit = 'word' | 'line';

/** A word: letters, digits and `_` in any script, with what comes before them. */
const NEXT_WORD = /^[^\p{L}\p{N}_]*[\p{L}\p{N}_]+/u;

/**
 * The part of `text` that accepting one `unit` takes: for a word, the whitespace and
 * punctuation before the next run of word characters and that run (as VS Code's "accept next
 * word"); for a line, everything up to and including the next line break. All of `text` when
 * there is no further word or line break.
 */
export function nextPart(text: string, unit: AcceptUnit): string {
  if (unit === 'line') {
    const end = text.indexOf('\n');
    return end === -1 ? text : text.slice(0, end + 1);
  }
  return NEXT_WORD.exec(text)?.[0] ?? text;
}

/** What accepting needs of an editor (a notebook cell's, in JupyterLab a CodeMirror one). */
export interface IAcceptEditor {
  /** The editor's text. */
  readonly source: string;
  /** The cursor, as an offset into `source` in the editor's own units. */
  readonly cursor: number;
  /** Insert `text` at `offset` and put the cursor after it. */
  insert(offset: number, text: string): void;
}

/** Who knows the suggestion on screen: our inline provider. */
export interface ISuggestionHolder {
  /** What is left of the suggestion shown, with the cursor between `prefix` and `suffix`. */
  remaining(prefix: string, suffix: string): string | null;
}

/**
 * Insert the next `unit` of the suggestion shown at the editor's cursor. Returns what is left
 * of the suggestion after it ('' when it was all taken), or null when no suggestion of ours
 * continues at the cursor (nothing is inserted then).
 */
export function acceptPart(
  editor: IAcceptEditor,
  holder: ISuggestionHolder,
  unit: AcceptUnit
): string | null {
  const cursor = editor.cursor;
  // Split as the provider's requests are split, so that the held suggestion is found.
  const [prefix, suffix] = splitAtCharOffset(editor.source, cursor);
  const rest = holder.remaining(prefix, suffix);
  if (!rest) {
    return null;
  }
  const part = nextPart(rest, unit);
  editor.insert(cursor, part);
  return rest.slice(part.length);
}
