/**
 * A line diff for the edit view: the longest common subsequence of two texts' lines, with the
 * common head and tail taken off first (an edit usually touches a few lines of a cell).
 */

export type DiffKind = 'same' | 'added' | 'removed';

export interface IDiffLine {
  kind: DiffKind;
  text: string;
}

/**
 * Above this many cells of the LCS table (lines changed × lines proposed), the changed middle
 * is shown as removed then added: a cell that long is rewritten, not edited.
 */
const MAX_TABLE = 4_000_000;

/** The lines of `before` and `after`, each marked same, removed or added, in reading order. */
export function lineDiff(before: string, after: string): IDiffLine[] {
  const a = splitLines(before);
  const b = splitLines(after);
  let head = 0;
  while (head < a.length && head < b.length && a[head] === b[head]) {
    head++;
  }
  let tail = 0;
  while (
    tail < a.length - head &&
    tail < b.length - head &&
    a[a.length - 1 - tail] === b[b.length - 1 - tail]
  ) {
    tail++;
  }
  const same = (text: string): IDiffLine => ({ kind: 'same', text });
  return [
    ...a.slice(0, head).map(same),
    ...middle(a.slice(head, a.length - tail), b.slice(head, b.length - tail)),
    ...a.slice(a.length - tail).map(same)
  ];
}

/** How many lines a diff adds and removes. */
export function diffStats(lines: IDiffLine[]): {
  added: number;
  removed: number;
} {
  return {
    added: lines.filter(l => l.kind === 'added').length,
    removed: lines.filter(l => l.kind === 'removed').length
  };
}

/**
 * The offset in Unicode code points (as the kernel counts) of `utf16Offset` in `text` (as the
 * editor counts): they differ after any character outside the Basic Multilingual Plane.
 */
export function codePointOffset(text: string, utf16Offset: number): number {
  let points = 0;
  for (let i = 0; i < utf16Offset && i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code >= 0xd800 && code <= 0xdbff && i + 1 < utf16Offset) {
      i++; // a surrogate pair is one character
    }
    points++;
  }
  return points;
}

/** A cell's lines; a last newline ends the last line rather than starting an empty one. */
function splitLines(text: string): string[] {
  if (text === '') {
    return [];
  }
  const lines = text.split('\n');
  if (lines[lines.length - 1] === '') {
    lines.pop();
  }
  return lines;
}

function middle(a: string[], b: string[]): IDiffLine[] {
  if (a.length * b.length > MAX_TABLE) {
    return [
      ...a.map(text => ({ kind: 'removed' as const, text })),
      ...b.map(text => ({ kind: 'added' as const, text }))
    ];
  }
  // lcs[i][j]: the longest common subsequence of a[i..] and b[j..].
  const lcs = Array.from(
    { length: a.length + 1 },
    () => new Uint32Array(b.length + 1)
  );
  for (let i = a.length - 1; i >= 0; i--) {
    for (let j = b.length - 1; j >= 0; j--) {
      lcs[i][j] =
        a[i] === b[j]
          ? lcs[i + 1][j + 1] + 1
          : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
    }
  }
  const out: IDiffLine[] = [];
  let i = 0;
  let j = 0;
  while (i < a.length || j < b.length) {
    if (i < a.length && j < b.length && a[i] === b[j]) {
      out.push({ kind: 'same', text: a[i] });
      i++;
      j++;
    } else if (
      i < a.length &&
      (j === b.length || lcs[i + 1][j] >= lcs[i][j + 1])
    ) {
      out.push({ kind: 'removed', text: a[i++] });
    } else {
      out.push({ kind: 'added', text: b[j++] });
    }
  }
  return out;
}
