"""Turn what the model wrote into what goes into the notebook.

* :func:`extract_code` — a chat answer → the code to insert as a cell: the ```python fenced
  blocks (an unterminated last fence counts: answers get cut by length or Stop), or, with no
  fence, the longest run of lines that compiles once leading/trailing chatter is dropped.
* :func:`clean_completion` — an inline suggestion → what the ghost text shows:
  1. it ends where the block or statement ends (Python indentation, brackets, strings);
  2. text that repeats the suffix is dropped (the editor keeps the suffix);
  3. brackets stay balanced: no stray closer, no opener left for nobody to close;
  4. a suggestion that is only whitespace becomes ``""`` (no suggestion at all).
"""

from __future__ import annotations

import re
import textwrap
import warnings

__all__ = ["clean_completion", "extract_code"]

_PYTHON_TAGS = frozenset({"", "python", "py", "python3", "ipython", "ipython3"})
_FENCE_OPEN = re.compile(r"^[ \t]*(?P<fence>`{3,}|~{3,})[ \t]*(?P<lang>[^\s`]*)")
_MAGIC = re.compile(r"^([ \t]*)[%!].*$", re.MULTILINE)
_MAX_CHATTER_LINES = 8
_OPENERS = {"(": ")", "[": "]", "{": "}"}
_CLOSERS = {")": "(", "]": "[", "}": "{"}
_BLOCK_CONTINUATIONS = ("else", "elif", "except", "finally", "case")


# ---------------------------------------------------------------------------------------------
# Chat answers → cell code


def extract_code(answer: str) -> str:
    """The Python code of a chat answer, ready to become a cell ("" when it holds none)."""
    blocks = _fenced_blocks(answer)
    if blocks:
        code = [body for lang, body in blocks if lang in _PYTHON_TAGS and body.strip()]
        return "\n\n".join(body.strip("\n") for body in code)
    return _strip_chatter(answer)


def _fenced_blocks(text: str) -> list[tuple[str, str]]:
    lines = text.splitlines()
    blocks: list[tuple[str, str]] = []
    i = 0
    while i < len(lines):
        opened = _FENCE_OPEN.match(lines[i])
        if not opened:
            i += 1
            continue
        fence = opened.group("fence")
        closing = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
        body: list[str] = []
        i += 1
        while i < len(lines) and not closing.match(lines[i]):
            body.append(lines[i])
            i += 1
        i += 1
        blocks.append((opened.group("lang").lower(), textwrap.dedent("\n".join(body))))
    return blocks


def _compiles(code: str) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            compile(_MAGIC.sub(r"\1pass", code), "<answer>", "exec")
        except (SyntaxError, ValueError):
            return False
    return True


def _strip_chatter(text: str) -> str:
    """Drop up to a few prose lines at either end until what is left compiles."""
    lines = text.strip("\n").splitlines()
    for dropped in range(min(len(lines), _MAX_CHATTER_LINES + 1)):
        for lead in range(dropped + 1):
            kept = lines[lead : len(lines) - (dropped - lead)]
            code = "\n".join(kept).strip("\n")
            if code.strip() and _compiles(code):
                return code
    return ""


# ---------------------------------------------------------------------------------------------
# Inline completions


class _Lexer:
    """Just enough of Python's lexer to know brackets, strings and comments, fed piece by piece."""

    def __init__(self) -> None:
        self.stack: list[str] = []
        self.quote: str | None = None
        self.comment = False
        self.bad_closers: list[int] = []  # offsets (in the last fed text) of closers with no opener

    def copy(self) -> "_Lexer":
        other = _Lexer()
        other.stack, other.quote, other.comment = list(self.stack), self.quote, self.comment
        return other

    def feed(self, text: str) -> list[tuple[int, int, bool]]:
        """Consume ``text``; return (offset, bracket depth, inside a string) at each line start."""
        self.bad_closers = []
        lines = [(0, len(self.stack), self.quote is not None)]
        i, n = 0, len(text)
        escaped_newline = False
        while i < n:
            ch = text[i]
            if ch == "\n":
                self.comment = False
                if self.quote in ('"', "'") and not escaped_newline:  # an unterminated one-line string ends here
                    self.quote = None
                escaped_newline = False
                lines.append((i + 1, len(self.stack), self.quote is not None))
            elif self.comment:
                pass
            elif self.quote:
                if ch == "\\":
                    escaped_newline = text.startswith("\n", i + 1)
                    i += 1 if escaped_newline else 2
                    continue
                if text.startswith(self.quote, i):
                    i += len(self.quote)
                    self.quote = None
                    continue
            elif ch == "#":
                self.comment = True
            elif ch in "\"'":
                self.quote = text[i : i + 3] if text[i : i + 3] in ('"""', "'''") else ch
                i += len(self.quote)
                continue
            elif ch in _OPENERS:
                self.stack.append(ch)
            elif ch in _CLOSERS:
                if self.stack and self.stack[-1] == _CLOSERS[ch]:
                    self.stack.pop()
                else:
                    self.bad_closers.append(i)
            i += 1
        return lines


def _bracket_errors(prefix: str, middle: str, suffix: str) -> int:
    lexer = _Lexer()
    errors = 0
    for part in (prefix, middle, suffix):
        lexer.feed(part)
        errors += len(lexer.bad_closers)
    return errors + len(lexer.stack) + (lexer.quote is not None)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def _ends_block_opener(line: str) -> bool:
    code = re.sub(r"#[^\"']*$", "", line).rstrip()
    return code.endswith(":")


def _cut_at_block_end(text: str, prefix: str, suffix: str) -> str:
    lexer = _Lexer()
    lexer.feed(prefix)
    cursor_in_string = lexer.quote is not None
    starts = lexer.feed(text)
    segments = text.split("\n")
    cursor_line = prefix.rsplit("\n", 1)[-1]
    rest_of_line = suffix.split("\n", 1)[0]

    full = [cursor_line + segments[0]] + segments[1:]
    base = next((k for k, line in enumerate(full) if line.strip()), None)
    if base is None:
        return text
    base_indent = _indent(full[base])
    # Text right of the cursor, or a half-written statement: finish that statement only. At the
    # end of a line that opens a string (a docstring) or of a blank line: write the block.
    single_statement = bool(rest_of_line.strip() or (cursor_line.strip() and not cursor_in_string))
    opener = False
    deeper = False
    blank_run = 0
    for k in range(base + 1, len(segments)):
        offset, depth, in_string = starts[k]
        if depth or in_string:
            continue
        line = segments[k]
        if single_statement and not opener:
            logical = "\n".join(full[base:k])
            if not _ends_block_opener(logical):
                return text[: offset - 1]
            opener = True
        if not line.strip():
            blank_run += 1
            if blank_run >= 2:
                return text[: starts[k - 1][0] - 1]
            continue
        blank_run = 0
        indent = _indent(line)
        if indent > base_indent:
            deeper = True
            continue
        if indent == base_indent and line.lstrip().startswith(_BLOCK_CONTINUATIONS) and deeper:
            deeper = False
            continue
        if indent < base_indent or deeper or (opener and indent == base_indent):
            return text[: offset - 1]
        if _ends_block_opener(full[k]):
            opener, base_indent = True, indent
    return text


def _drop_suffix_repeat(text: str, prefix: str, suffix: str) -> str:
    first = next((line.strip() for line in suffix.split("\n") if line.strip()), "")
    if first:
        offset = 0
        for k, line in enumerate(text.split("\n")):
            if k and line.strip() == first:
                text = text[: offset - 1]
                break
            offset += len(line) + 1
    rest = suffix.split("\n", 1)[0].rstrip()
    body = text.rstrip()
    for k in range(len(rest), 0, -1):
        overlap = rest[:k]
        if overlap.strip() and body.endswith(overlap):
            shorter = body[: len(body) - k]
            if _bracket_errors(prefix, shorter, suffix) <= _bracket_errors(prefix, body, suffix):
                return shorter
            break
    return text


def _balance(text: str, prefix: str, suffix: str) -> str:
    lexer = _Lexer()
    lexer.feed(prefix)
    start_depth = len(lexer.stack)
    probe = lexer.copy()
    probe.feed(text)
    if probe.bad_closers:
        text = text[: probe.bad_closers[0]]
    baseline = _bracket_errors(prefix, "", suffix)
    if _bracket_errors(prefix, text, suffix) <= baseline:
        return text
    starts = lexer.copy().feed(text)
    for offset, depth, in_string in reversed(starts[1:]):
        candidate = text[: offset - 1]
        if depth <= start_depth and not in_string and _bracket_errors(prefix, candidate, suffix) <= baseline:
            return candidate
    return ""


def clean_completion(completion: str, prefix: str, suffix: str = "", *, truncated: bool = False) -> str:
    """What an inline suggestion should insert at the cursor between ``prefix`` and ``suffix``.

    ``prefix``/``suffix`` are the current cell's text around the cursor (the rest of the
    notebook is not needed). Returns ``""`` when nothing worth showing is left.
    ``truncated``: generation was cut short (time or token limit), so an unclosed bracket on
    the last line is expected; what came is kept rather than dropped when balancing fails.
    """
    text = completion.replace("\r\n", "\n")
    text = _cut_at_block_end(text, prefix, suffix)
    text = _drop_suffix_repeat(text, prefix, suffix)
    balanced = _balance(text, prefix, suffix).rstrip()
    if truncated and not balanced.strip():
        balanced = text.rstrip()
    return balanced if balanced.strip() else ""
