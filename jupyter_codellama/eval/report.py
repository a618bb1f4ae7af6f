"""What an evaluation run produced: per-problem results, pass@1, JSON and a Markdown table.

An :class:`EvalReport` is also a display object: a notebook cell that ends with one shows the
table (``_repr_markdown_``).
"""

from __future__ import annotations

import json
import os
import platform
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["PAPER_PASS1", "EvalReport", "ProblemResult", "machine_info", "paper_figure"]

#: Greedy pass@1 (%) from the Code Llama paper, keyed by (suite, catalogue name): HumanEval,
#: and HumanEval single-line infilling (PSM / SPM) for the released 7B and 13B.
PAPER_PASS1: dict[tuple[str, str], float] = {
    ("humaneval", "7b"): 33.5,
    ("humaneval", "7b-python"): 38.4,
    ("humaneval", "7b-instruct"): 34.8,
    ("humaneval", "13b"): 36.0,
    ("humaneval", "13b-python"): 43.3,
    ("humaneval", "13b-instruct"): 42.7,
    ("humaneval", "34b"): 48.8,
    ("humaneval", "34b-python"): 53.7,
    ("humaneval", "34b-instruct"): 41.5,
    ("infill-psm", "7b"): 74.1,
    ("infill-spm", "7b"): 83.3,
    ("infill-psm", "13b"): 75.9,
    ("infill-spm", "13b"): 85.6,
}

SUITE_TITLES = {"humaneval": "HumanEval", "infill": "HumanEval single-line infilling", "tasks": "Programming tasks"}


def paper_figure(suite: str, model: str, mode: str | None = None) -> float | None:
    key = f"infill-{mode}" if suite == "infill" else suite
    return PAPER_PASS1.get((key, model))


@dataclass
class ProblemResult:
    task_id: str
    passed: bool
    summary: str
    prompt_kind: str
    stop_reason: str
    prompt_tokens: int
    generated_tokens: int
    generate_s: float
    check_s: float
    completion: str
    code: str
    code_source: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["generate_s"], d["check_s"] = round(self.generate_s, 3), round(self.check_s, 3)
        return d


@dataclass
class EvalReport:
    suite: str
    model: str
    model_info: dict[str, Any]
    settings: dict[str, Any]
    problems_available: int
    problems_selected: int
    machine: dict[str, Any] = field(default_factory=dict)
    results: list[ProblemResult] = field(default_factory=list)
    started_at: str = ""
    elapsed_s: float = 0.0
    load_s: float = 0.0
    interrupted: bool = False

    @property
    def n(self) -> int:
        return len(self.results)

    @property
    def passed(self) -> int:
        return sum(r.passed for r in self.results)

    @property
    def pass_at_1(self) -> float:
        """Fraction of the problems run that passed (0 when none ran)."""
        return self.passed / self.n if self.n else 0.0

    @property
    def prompt_format(self) -> str:
        kinds = Counter(r.prompt_kind for r in self.results if r.prompt_kind)
        return ", ".join(k for k, _ in kinds.most_common()) or self.settings.get("format", "")

    @property
    def paper(self) -> float | None:
        return paper_figure(self.suite, self.model, self.settings.get("mode"))

    def to_dict(self) -> dict[str, Any]:
        generated = sum(r.generated_tokens for r in self.results)
        generate_s = sum(r.generate_s for r in self.results)
        return {
            "suite": self.suite,
            "title": SUITE_TITLES.get(self.suite, self.suite),
            "model": self.model,
            **self.model_info,
            "prompt_format": self.prompt_format,
            "settings": dict(self.settings),
            "problems_available": self.problems_available,
            "problems_selected": self.problems_selected,
            "problems_run": self.n,
            "passed": self.passed,
            "pass@1": round(self.pass_at_1, 4),
            "paper_pass@1": self.paper,
            "interrupted": self.interrupted,
            "started_at": self.started_at,
            "elapsed_s": round(self.elapsed_s, 1),
            "load_s": round(self.load_s, 1),
            "generated_tokens": generated,
            "tokens_per_s": round(generated / generate_s, 2) if generate_s else None,
            "stop_reasons": dict(Counter(r.stop_reason for r in self.results)),
            "failure_kinds": dict(Counter(_failure_kind(r.summary) for r in self.results if not r.passed)),
            "machine": dict(self.machine),
            "results": [r.to_dict() for r in self.results],
        }

    def write_json(self, path: str | os.PathLike) -> None:
        """Write atomically: a run killed mid-write leaves the previous file intact."""
        path = os.fspath(path)
        tmp = f"{path}.{os.getpid()}.tmp"
        try:
            with open(tmp, "w") as out:
                json.dump(self.to_dict(), out, indent=1)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def to_markdown(self) -> str:
        title = SUITE_TITLES.get(self.suite, self.suite)
        if self.suite == "infill" and self.settings.get("fim"):
            title += f" ({self.settings['mode'].upper()})"
        paper = f"{self.paper:.1f}%" if self.paper is not None else "—"
        info = self.model_info
        model = f"{self.model} ({', '.join(str(info[k]) for k in ('quantization', 'dtype', 'device') if info.get(k))})"
        problems = f"{self.n}" + (f" of {self.problems_available}" if self.n != self.problems_available else "")
        row = (
            f"| {title} | {model} | {self.prompt_format} | {problems} | {self.passed} | "
            f"**{100 * self.pass_at_1:.1f}%** | {paper} | {_duration(self.elapsed_s)} |"
        )
        lines = [
            "| benchmark | model | prompt | problems | passed | pass@1 | paper | time |",
            "|---|---|---|---|---|---|---|---|",
            row,
            "",
            f"Greedy decoding, at most {self.settings.get('max_new_tokens')} new tokens, "
            f"{self.settings.get('time_limit'):g} s per check; {self.machine.get('summary', '')}.",
        ]
        if self.interrupted:
            lines.append(f"**Interrupted** after {self.n} of {self.problems_selected} problems.")
        if "continuation" in self.prompt_format:
            lines.append("This model cannot fill in the middle: it continued the prefix (the suffix was not shown).")
        return "\n".join(lines)

    def _repr_markdown_(self) -> str:
        return self.to_markdown()


def _failure_kind(summary: str) -> str:
    if summary.startswith("timed out"):
        return "timed out"
    head = summary.split(":", 1)[0].split(" at ", 1)[0].strip()
    return head if head.replace("_", "").isalnum() else "other"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def machine_info() -> dict[str, Any]:
    """CPU, memory, GPU and library versions, for the record of where a figure was measured."""
    import torch
    import transformers

    from .._version import __version__

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        import psutil

        memory_gib = round(psutil.virtual_memory().total / 2**30)
    except ImportError:
        memory_gib = None
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    cores = os.cpu_count()
    summary = f"{cores} vCPU {cpu}" + (f", {memory_gib} GiB" if memory_gib else "")
    summary += f", {gpu}" if gpu else ", no GPU"
    return {
        "summary": summary,
        "cpu": cpu,
        "cpu_count": cores,
        "memory_gib": memory_gib,
        "gpu": gpu,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "transformers": transformers.__version__,
        "jupyter_codellama": __version__,
    }
