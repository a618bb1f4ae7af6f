"""The benchmarks, each as a :class:`Suite`: its problems, the prompt for one, and the check.

A suite never calls the model: :func:`~jupyter_codellama.eval.runner.run_eval` does, with the
prompt a suite builds for the loaded model, and hands the text back to :meth:`Suite.evaluate`.
Prompts go through the notebook's one prompt entry point (``prompts.requests.build`` of a
``ChatRequest`` / ``InfillRequest``), so what is measured is what users get.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol, Sequence

from ..prompts import ChatMessage, Prompt
from ..prompts.requests import ChatRequest, InfillRequest, build
from .humaneval import (
    HumanEvalProblem,
    InfillProblem,
    answer_code,
    chat_program,
    chat_request,
    code_block_closed,
    completion_program,
    completion_prompt,
    first_line,
    load_humaneval,
    single_line_infill_problems,
)
from .sandbox import CheckResult
from .tasks import TASKS, Task

__all__ = ["Attempt", "HumanEvalSuite", "InfillSuite", "Suite", "TasksSuite", "make_suite", "select"]

Format = Literal["auto", "completion", "chat"]
SUITES = ("humaneval", "infill", "tasks")


@dataclass(frozen=True)
class Attempt:
    """What was checked for one problem, and how it went."""

    code: str
    check: CheckResult
    code_source: str = ""


class Suite(Protocol):
    name: str
    stop: tuple[str, ...]

    def problems(self) -> Sequence[Any]: ...

    def problem_id(self, problem: Any) -> str: ...

    def prepare(self, loaded: Any) -> dict[str, Any]:
        """Choose the prompt format for the loaded model; return settings for the report."""

    def prompt(self, problem: Any, loaded: Any, *, max_new_tokens: int) -> Prompt: ...

    def evaluate(self, problem: Any, text: str, *, timeout: float) -> Attempt: ...

    def finished(self, text: str) -> bool:
        """Whether the answer so far is complete enough to stop generating (chat: a code block)."""


def select(problems: Sequence[Any], limit: int | None) -> list[Any]:
    """``limit`` problems spread evenly over the set (deterministic); all when ``limit`` is None.

    Even spacing rather than the first N: the derived infilling problems come grouped by
    HumanEval problem, and the first 200 would cover only a few dozen functions.
    """
    if limit is None or limit >= len(problems):
        return list(problems)
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    return [problems[i * len(problems) // limit] for i in range(limit)]


def _system(system: str | None) -> str | None:
    """CLI spelling → ``ChatRequest.system``: 'default' → None (ours), 'none' → ''."""
    if system is None or system == "default":
        return None
    return "" if system == "none" else system


class HumanEvalSuite:
    """HumanEval pass@1: base models continue the prompt, chat models are asked for the function."""

    name = "humaneval"
    stop: tuple[str, ...] = ()

    def __init__(
        self,
        *,
        format: Format = "auto",
        system: str | None = "default",
        problems: Sequence[HumanEvalProblem] | None = None,
    ) -> None:
        if format not in ("auto", "completion", "chat"):
            raise ValueError(f"Unknown format {format!r}: use 'auto', 'completion' or 'chat'.")
        self.format = format
        self.system = system
        self._problems = list(problems) if problems is not None else None
        self._resolved: str = format

    def problems(self) -> list[HumanEvalProblem]:
        if self._problems is None:
            self._problems = load_humaneval()
        return self._problems

    def problem_id(self, problem: HumanEvalProblem) -> str:
        return problem.task_id

    def prepare(self, loaded: Any) -> dict[str, Any]:
        if self.format == "auto":
            self._resolved = "chat" if loaded.spec.is_instruct else "completion"
        else:
            self._resolved = self.format
        settings: dict[str, Any] = {"format": self._resolved}
        if self._resolved == "chat":
            settings["system"] = self.system or "default"
        return settings

    def prompt(self, problem: HumanEvalProblem, loaded: Any, *, max_new_tokens: int) -> Prompt:
        if self._resolved == "completion":
            return completion_prompt(problem, loaded.tokenizer, loaded.spec, max_new_tokens=max_new_tokens)
        messages: list[ChatMessage] = [{"role": "user", "content": chat_request(problem)}]
        return build(ChatRequest(messages=messages, system=_system(self.system), max_new_tokens=max_new_tokens), loaded)

    def finished(self, text: str) -> bool:
        return self._resolved == "chat" and code_block_closed(text)

    def evaluate(self, problem: HumanEvalProblem, text: str, *, timeout: float) -> Attempt:
        if self._resolved == "completion":
            program = completion_program(problem, text)
            return Attempt(program, problem.check(program, timeout=timeout), "completion")
        code, source = answer_code(text)
        program = chat_program(problem, code)
        return Attempt(program, problem.check(program, timeout=timeout), source)


class InfillSuite:
    """Single-line infilling through the notebook's completion prompt (FIM, or continuation)."""

    name = "infill"
    # Only the first line is the answer: stopping there gives the same result, sooner.
    stop = ("\n",)

    def __init__(
        self, *, mode: Literal["psm", "spm"] = "psm", problems: Sequence[HumanEvalProblem] | None = None
    ) -> None:
        if mode not in ("psm", "spm"):
            raise ValueError(f"Unknown infilling mode {mode!r}: use 'psm' or 'spm'.")
        self.mode = mode
        self._base = list(problems) if problems is not None else None
        self._problems: list[InfillProblem] | None = None

    def problems(self) -> list[InfillProblem]:
        if self._problems is None:
            self._problems = single_line_infill_problems(self._base if self._base is not None else load_humaneval())
        return self._problems

    def problem_id(self, problem: InfillProblem) -> str:
        return problem.task_id

    def prepare(self, loaded: Any) -> dict[str, Any]:
        fim = bool(loaded.spec.supports_infill)
        return {"mode": self.mode, "format": self.mode if fim else "continuation", "fim": fim}

    def prompt(self, problem: InfillProblem, loaded: Any, *, max_new_tokens: int) -> Prompt:
        return build(
            InfillRequest(prefix=problem.prefix, suffix=problem.suffix, mode=self.mode, max_new_tokens=max_new_tokens),
            loaded,
        )

    def finished(self, text: str) -> bool:
        return False

    def evaluate(self, problem: InfillProblem, text: str, *, timeout: float) -> Attempt:
        middle = first_line(text)
        return Attempt(middle, problem.check(middle, timeout=timeout), "first-line")


class TasksSuite:
    """The LeetCode-style tasks of notebook 05, asked through the notebook's chat prompt."""

    name = "tasks"
    stop: tuple[str, ...] = ()

    def __init__(self, *, system: str | None = "default", tasks: Sequence[Task] = TASKS) -> None:
        self.system = system
        self._tasks = list(tasks)

    def problems(self) -> list[Task]:
        return self._tasks

    def problem_id(self, problem: Task) -> str:
        return problem.name

    def prepare(self, loaded: Any) -> dict[str, Any]:
        return {"format": "chat" if loaded.spec.is_instruct else "completion", "system": self.system or "default"}

    def prompt(self, problem: Task, loaded: Any, *, max_new_tokens: int) -> Prompt:
        messages: list[ChatMessage] = [{"role": "user", "content": problem.prompt}]
        return build(ChatRequest(messages=messages, system=_system(self.system), max_new_tokens=max_new_tokens), loaded)

    def finished(self, text: str) -> bool:
        return code_block_closed(text)

    def evaluate(self, problem: Task, text: str, *, timeout: float) -> Attempt:
        code, source = answer_code(text)
        return Attempt(code, problem.check(code, timeout=timeout), source)


def make_suite(name: str, **options: Any) -> Suite:
    """``humaneval`` (format, system), ``infill`` (mode) or ``tasks`` (system)."""
    factories = {"humaneval": HumanEvalSuite, "infill": InfillSuite, "tasks": TasksSuite}
    if name not in factories:
        raise ValueError(f"Unknown benchmark {name!r}: use one of {', '.join(SUITES)}.")
    return factories[name](**options)
