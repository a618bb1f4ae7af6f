"""The evaluation loop: for each problem, prompt → greedy generation → sandboxed check.

    run_eval
      ├─ suite.prepare        the prompt format for the loaded model (completion, chat, FIM…)
      ├─ select               --limit: an evenly spread, deterministic subset
      └─ per problem          engine.generate(builder) → suite.evaluate → on_result (progress)

Greedy pass@1 with one sample per problem, as the paper reports. The prefix cache is off so
that a result does not depend on which problem ran before it. Chat answers end as soon as their
first Python code block is closed (``suite.finished``): that block is what gets checked, and
the prose after it would only cost time.
"""

from __future__ import annotations

import sys
import threading
import time
from datetime import datetime, timezone
from typing import Any, Callable, TextIO

from ..engine.engine import Engine, EngineError, Job
from ..engine.generation import GenerationResult
from .report import EvalReport, ProblemResult, machine_info
from .suites import Suite, select

__all__ = ["ProgressPrinter", "run_eval"]

ResultCallback = Callable[[EvalReport, ProblemResult], None]
_MODEL_FIELDS = ("repo_id", "quantization", "dtype", "device", "supports_infill", "chat_format")


def run_eval(
    suite: Suite,
    engine: Engine,
    *,
    limit: int | None = None,
    max_new_tokens: int = 512,
    time_limit: float = 10.0,
    max_time: float | None = None,
    on_result: ResultCallback | None = None,
) -> EvalReport:
    """Run ``suite`` with the engine's loaded model; Ctrl-C ends early with a partial report."""
    loaded = engine.loaded
    if loaded is None:
        raise RuntimeError("Load a model first: engine.load(model).wait()")
    if max_new_tokens < 1 or time_limit <= 0 or (max_time is not None and max_time <= 0):
        raise ValueError("max_new_tokens must be >= 1, and time_limit / max_time positive")
    all_problems = suite.problems()
    problems = select(all_problems, limit)
    settings = {
        "limit": limit,
        "max_new_tokens": max_new_tokens,
        "time_limit": time_limit,
        "max_time": max_time,
        "temperature": 0.0,
        **suite.prepare(loaded),
    }
    info = loaded.info()
    report = EvalReport(
        suite=suite.name,
        model=loaded.spec.name,
        model_info={k: info.get(k) for k in _MODEL_FIELDS},
        settings=settings,
        problems_available=len(all_problems),
        problems_selected=len(problems),
        machine=machine_info(),
        started_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        load_s=loaded.load_seconds,
    )
    started = time.perf_counter()
    try:
        for problem in problems:
            result = _run_one(
                suite, engine, problem, max_new_tokens=max_new_tokens, time_limit=time_limit, max_time=max_time
            )
            report.results.append(result)
            report.elapsed_s = time.perf_counter() - started
            if on_result is not None:
                on_result(report, result)
    except KeyboardInterrupt:
        report.interrupted = True
    report.elapsed_s = time.perf_counter() - started
    return report


def _run_one(
    suite: Suite, engine: Engine, problem: Any, *, max_new_tokens: int, time_limit: float, max_time: float | None
) -> ProblemResult:
    built: dict[str, Any] = {}

    def builder(loaded):
        built["prompt"] = suite.prompt(problem, loaded, max_new_tokens=max_new_tokens)
        return built["prompt"]

    task_id = suite.problem_id(problem)
    t0 = time.perf_counter()
    try:
        generation, early = _generate(suite, engine, builder, max_new_tokens=max_new_tokens, max_time=max_time)
    except EngineError as exc:
        prompt = built.get("prompt")
        return ProblemResult(
            task_id,
            False,
            f"generation failed: {exc}",
            getattr(prompt, "kind", ""),
            "error",
            getattr(prompt, "num_tokens", 0),
            0,
            time.perf_counter() - t0,
            0.0,
            "",
            "",
        )
    generate_s = time.perf_counter() - t0
    attempt = suite.evaluate(problem, generation.text, timeout=time_limit)
    return ProblemResult(
        task_id=task_id,
        passed=attempt.check.ok,
        summary=attempt.check.summary(),
        prompt_kind=built["prompt"].kind,
        stop_reason="code-block" if early else generation.stop_reason,
        prompt_tokens=generation.prompt_tokens,
        generated_tokens=len(generation.tokens),
        generate_s=generate_s,
        check_s=attempt.check.seconds,
        completion=generation.text,
        code=attempt.code,
        code_source=attempt.code_source,
    )


def _generate(
    suite: Suite, engine: Engine, builder, *, max_new_tokens: int, max_time: float | None
) -> tuple[GenerationResult, bool]:
    """Greedy generation that ends early once ``suite.finished`` says the answer is complete."""
    text: list[str] = []
    early = threading.Event()
    holder: dict[str, Job] = {}

    def on_chunk(chunk: str) -> None:  # on the engine thread
        text.append(chunk)
        if not early.is_set() and suite.finished("".join(text)):
            early.set()
            if "job" in holder:
                holder["job"].cancel()

    job = engine.submit(
        "generate",
        builder,
        max_new_tokens=max_new_tokens,
        temperature=0.0,
        stop=suite.stop,
        max_time=max_time,
        use_prefix_cache=False,
        on_chunk=on_chunk,
    )
    holder["job"] = job
    if early.is_set():
        job.cancel()
    try:
        result = job.wait()
    except KeyboardInterrupt:
        job.cancel()
        job.wait(30)
        raise
    if result.stop_reason == "error":
        raise EngineError(job.error_code or "error", result.error or "generation failed")
    return result, early.is_set() and result.stop_reason == "cancelled"


class ProgressPrinter:
    """One plain line per problem (stderr): verdict, running pass rate, pace and ETA."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr

    def __call__(self, report: EvalReport, result: ProblemResult) -> None:
        done, total = report.n, report.problems_selected
        per_problem = report.elapsed_s / done
        eta = per_problem * (total - done)
        verdict = "pass" if result.passed else "FAIL " + _shorten(result.summary, 60)
        width = len(str(total))
        print(
            f"[{done:>{width}}/{total}] {result.task_id}: {verdict} | pass@1 "
            f"{100 * report.pass_at_1:.1f}% ({report.passed}/{done}) | "
            f"{per_problem:.1f} s/problem | ETA {_clock(eta)}",
            file=self.stream,
            flush=True,
        )


def _shorten(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
