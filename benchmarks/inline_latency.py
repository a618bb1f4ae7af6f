"""Inline completion latency: replay the typing of real notebooks through the comm code path.

    python benchmarks/inline_latency.py                 # embedded model, CPU
    python benchmarks/inline_latency.py --model PATH --quantization 4bit   # e.g. on a GPU

Each code cell of the example notebooks is typed character by character at a realistic pace.
Every keystroke sends a ``complete`` request (with the notebook's other cells as context)
through :class:`CommSession`, exactly what the JupyterLab provider sends. While the user keeps
typing, the request is cancelled after its first token; at the end of a line the user pauses,
and the suggestion is allowed to finish. Measured per request:

* time to first token: request sent → first streamed chunk;
* time to a shown suggestion: request sent → the first chunk with visible text;
* cache hit: whether the prompt reused a cached KV prefix.

The same replay runs with the prefix cache on and off (off: fewer keystrokes, each is slow),
and prints medians, p95 and the ratio.

Then the time to the next suggestion after an accepted one: at line ends of the same cells, a
suggestion is asked for and accepted whole (Tab); as the JupyterLab provider does, a prefetch
for the new cursor position goes out at once, and the request JupyterLab makes after its
debounce follows. Measured, with the prefetch and, for comparison, without: that request sent →
its first visible text (the ghost text appears), and → its end.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


class Replies:
    """Collects comm replies and lets the replay wait for the one it needs."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.by_id: dict[str, list[tuple[float, dict]]] = {}

    def __call__(self, message: dict) -> None:
        with self.cond:
            self.by_id.setdefault(message.get("request_id"), []).append((time.perf_counter(), message))
            self.cond.notify_all()

    def wait(self, request_id: str, predicate, timeout: float = 60.0):
        deadline = time.perf_counter() + timeout
        with self.cond:
            while True:
                for at, m in self.by_id.get(request_id, ()):
                    if predicate(m):
                        return at, m
                left = deadline - time.perf_counter()
                if left <= 0:
                    return None, None
                self.cond.wait(left)


def notebook_cells(paths: list[Path]) -> list[tuple[list[dict], int]]:
    """(cells of a notebook, index of a code cell to type) for every typable cell."""
    import nbformat

    from jupyter_codellama.session import is_assistant_cell

    out = []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        cells = [{"cell_type": c.cell_type, "source": c.source} for c in nb.cells]
        for i, c in enumerate(cells):
            if c["cell_type"] == "code" and c["source"].strip() and not is_assistant_cell(c["source"]):
                out.append((cells, i))
    return out


def complete_fields(cells: list[dict], index: int, prefix: str, suffix: str, max_new_tokens: int) -> dict:
    """A ``complete`` request as the JupyterLab provider sends it while typing, the cell typed up
    to ``prefix`` (no ``multiline``: the kernel decides)."""
    current = [dict(c) for c in cells]
    current[index] = {"cell_type": "code", "source": prefix + suffix}
    return {
        "type": "complete",
        "prefix": prefix,
        "suffix": suffix,
        "cells": current,
        "current": index,
        "variables": False,
        "temperature": 0,
        "max_new_tokens": max_new_tokens,
        "max_time_ms": 2000,
    }


def replay(
    session, replies: Replies, targets, *, max_chars: int, pace_s: float, max_new_tokens: int, forget=None
) -> list[dict]:
    """Type the cells; ``forget()`` runs before each request (clears the prefix cache: no reuse)."""
    records, typed_total, n = [], 0, 0
    for cells, index in targets:
        source = cells[index]["source"]
        for end in range(1, len(source) + 1):
            if typed_total >= max_chars:
                return records
            typed_total += 1
            prefix, suffix = source[:end], source[end:]
            request_id = f"k{n}"
            n += 1
            pause = end == len(source) or source[end - 1] == "\n"
            if forget is not None:
                forget()
            sent = time.perf_counter()
            fields = complete_fields(cells, index, prefix, "", max_new_tokens)
            session.handle({**fields, "suffix": suffix, "request_id": request_id})
            first_at, first = replies.wait(request_id, lambda m: m["type"] in ("chunk", "done", "error"))
            shown_at, _ = replies.wait(
                request_id,
                lambda m: (m["type"] == "chunk" and m["text"].strip()) or m["type"] in ("done", "error"),
                timeout=5 if pause else 0.001,
            )
            if not pause:
                session.handle({"type": "cancel", "request_id": f"x{request_id}", "target_id": request_id})
            _, done = replies.wait(request_id, lambda m: m["type"] in ("done", "error"))
            if first is None or done is None or done["type"] == "error":
                continue
            records.append(
                {
                    "ttft": first_at - sent,
                    "shown": (shown_at - sent) if shown_at and pause else None,
                    "hit": done.get("cached_tokens", 0) > 0 or done.get("from_suggestion", False),
                    "prompt_tokens": done.get("prompt_tokens", 0),
                    "cached_tokens": done.get("cached_tokens", 0),
                    "typed_through": bool(done.get("from_suggestion")),
                }
            )
            rest = pace_s - (time.perf_counter() - sent)
            if rest > 0:
                time.sleep(rest)
    return records


def line_ends(targets) -> list[tuple[list[dict], int, str]]:
    """(cells, index, the cell up to a line end) for every line end of every typable cell."""
    return [
        (cells, index, cells[index]["source"][: end + 1])
        for cells, index in targets
        for end, c in enumerate(cells[index]["source"])
        if c == "\n"
    ]


def after_acceptance(
    session, replies: Replies, points, *, prefetch: bool, debounce_s: float, max_new_tokens: int
) -> list[dict]:
    """Accept a suggestion whole at each point; time the next one (with or without a prefetch)."""
    records = []
    for n, (cells, index, prefix) in enumerate(points):
        session.handle({**complete_fields(cells, index, prefix, "", max_new_tokens), "request_id": f"s{n}"})
        _, shown = replies.wait(f"s{n}", lambda m: m["type"] in ("done", "error"))
        if shown is None or shown["type"] != "done" or not shown["text"].strip():
            continue
        fields = complete_fields(cells, index, prefix + shown["text"], "", max_new_tokens)
        accepted = time.perf_counter()
        if prefetch:
            session.handle({**fields, "request_id": f"p{n}", "prefetch": True})
        time.sleep(max(0.0, debounce_s - (time.perf_counter() - accepted)))
        sent = time.perf_counter()
        session.handle({**fields, "request_id": f"a{n}"})
        shown_at, _ = replies.wait(
            f"a{n}", lambda m: (m["type"] == "chunk" and m["text"].strip()) or m["type"] in ("done", "error")
        )
        at, done = replies.wait(f"a{n}", lambda m: m["type"] in ("done", "error"))
        if done is None or done["type"] != "done" or not done["text"].strip():
            continue
        records.append({"shown": shown_at - sent, "done": at - sent, "prefetched": bool(done.get("prefetched"))})
        if prefetch:
            replies.wait(f"p{n}", lambda m: m["type"] in ("done", "error"))
    return records


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def summarize(name: str, records: list[dict]) -> dict:
    ttft = [r["ttft"] * 1000 for r in records if not r["typed_through"]]
    shown = [r["shown"] * 1000 for r in records if r["shown"] is not None]
    return {
        "name": name,
        "requests": len(records),
        "ttft_p50": pct(ttft, 0.5),
        "ttft_p95": pct(ttft, 0.95),
        "shown_p50": pct(shown, 0.5),
        "shown_p95": pct(shown, 0.95),
        "shown_n": len(shown),
        "hit_rate": sum(r["hit"] for r in records) / max(1, len(records)),
        "typed_through": sum(r["typed_through"] for r in records),
        "prompt_tokens": statistics.mean(r["prompt_tokens"] for r in records) if records else 0,
    }


def run_acceptances(args) -> tuple[list[dict], list[dict]]:
    """The time to the next suggestion after an accepted one: (with prefetch, without)."""
    from jupyter_codellama.comm import CommSession
    from jupyter_codellama.config import CodeLlama
    from jupyter_codellama.engine.engine import Engine

    engine = Engine(CodeLlama(model=args.model, quantization=args.quantization))
    engine.load().wait()
    points = line_ends(notebook_cells(sorted((ROOT / "example_notebooks").glob("*.ipynb"))))[: args.accepts]
    try:
        out = []
        for prefetch in (True, False):
            replies = Replies()
            session = CommSession(replies, engine=engine, namespace=lambda: {})
            try:
                out.append(
                    after_acceptance(
                        session,
                        replies,
                        points,
                        prefetch=prefetch,
                        debounce_s=args.debounce_ms / 1000,
                        max_new_tokens=args.max_new_tokens,
                    )
                )
            finally:
                session.close()
        return out[0], out[1]
    finally:
        engine.shutdown()


def run(args, reuse: bool, max_chars: int):
    from jupyter_codellama.comm import CommSession
    from jupyter_codellama.config import CodeLlama
    from jupyter_codellama.engine.engine import Engine

    # The CPU engine keeps a minimum of cached positions whatever prefix_cache_mb says: without
    # reuse, the cache is cleared before every request instead.
    engine = Engine(CodeLlama(model=args.model, quantization=args.quantization))
    engine.load().wait()
    replies = Replies()
    session = CommSession(replies, engine=engine, namespace=lambda: {})
    targets = notebook_cells(sorted((ROOT / "example_notebooks").glob("*.ipynb")))
    try:
        return replay(
            session,
            replies,
            targets,
            max_chars=max_chars,
            pace_s=args.pace_ms / 1000,
            max_new_tokens=args.max_new_tokens,
            forget=None if reuse else engine.clear_prefix_cache,
        ), engine.status()
    finally:
        session.close()
        engine.shutdown()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="embedded")
    p.add_argument("--quantization", default="auto")
    p.add_argument("--chars", type=int, default=300, help="keystrokes replayed with the prefix cache")
    p.add_argument("--chars-no-reuse", type=int, default=40, help="keystrokes replayed without it")
    p.add_argument("--pace-ms", type=float, default=150, help="time between keystrokes")
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--accepts", type=int, default=40, help="suggestions accepted, each followed by the next")
    p.add_argument(
        "--debounce-ms",
        type=float,
        default=150,
        help="JupyterLab's wait after an edit before it asks (the provider's debouncerDelay)",
    )
    args = p.parse_args()

    import torch

    with_reuse, status = run(args, True, args.chars)
    without, _ = run(args, False, args.chars_no_reuse)
    a, b = summarize("with KV reuse", with_reuse), summarize("without reuse", without)
    print(
        f"machine: {torch.get_num_threads()} torch threads, torch {torch.__version__}; "
        f"model {status.get('model')} ({status.get('quantization')}, {status.get('device')})"
    )
    print(
        f"typing pace {args.pace_ms:.0f} ms/keystroke, pause at each line end; "
        f"mean prompt {a['prompt_tokens']:.0f} tokens"
    )
    header = f"{'':16} {'requests':>8} {'TTFT p50':>9} {'TTFT p95':>9} {'shown p50':>10} {'shown p95':>10} {'hits':>6}"
    print(header)
    for s in (a, b):
        print(
            f"{s['name']:16} {s['requests']:8d} {s['ttft_p50']:7.0f}ms {s['ttft_p95']:7.0f}ms "
            f"{s['shown_p50']:8.0f}ms {s['shown_p95']:8.0f}ms {s['hit_rate']:6.0%}"
        )
    print(f"typed-through suggestions (no model call): {a['typed_through']}")
    print(f"TTFT p50 ratio without/with reuse: {b['ttft_p50'] / a['ttft_p50']:.1f}x")

    with_prefetch, without_prefetch = run_acceptances(args)
    print(f"next suggestion after an accepted one ({args.debounce_ms:.0f} ms debounce), from its request:")
    print(f"{'':16} {'requests':>8} {'shown p50':>10} {'shown p95':>10} {'done p50':>9} {'done p95':>9} prefetched")
    for name, records in (("with prefetch", with_prefetch), ("without", without_prefetch)):
        shown, done = [r["shown"] * 1000 for r in records], [r["done"] * 1000 for r in records]
        print(
            f"{name:16} {len(records):8d} {pct(shown, 0.5):8.1f}ms {pct(shown, 0.95):8.1f}ms "
            f"{pct(done, 0.5):7.1f}ms {pct(done, 0.95):7.1f}ms {sum(r['prefetched'] for r in records)}"
        )


if __name__ == "__main__":
    main()
