"""Decode benchmark: our engine (PyTorch eager, and the CPU kernel as "fast") against llama.cpp on the same GGUF.

    python benchmarks/decode.py                    # embedded SmolLM2-135M Q4_1, 2 threads
    python benchmarks/decode.py --threads 1 --repeats 7

llama.cpp runs through llama-cpp-python (benchmark-only; see the README for an AVX2 build). All
sides run in one process, alternating within every repetition, and the figures are medians with
ratios taken from the same run, because these machines are noisy. Measured:

* decode speed: N greedy tokens after a short prompt, tok/s over tokens 2..N;
* time to first token for a long prompt, cold (no reuse) and with the prompt's prefix reused
  (the same prompt plus a few typed tokens, after the prompt alone was answered);
* decode speed at that long context: the reused answer goes on for N tokens (attention over
  1,500 positions; llama.cpp keeps its KV in fp16, we keep the PyTorch path's fp32).

With ``--shaped 7b`` it compares llama.cpp with our C engine (``engine.native.NativeModel``) on a
Code Llama-7B-shaped GGUF with random weights and the real tokenizer (benchmarks/shaped_gguf.py
builds and caches it; the speed is the real model's, the text is noise):

    python benchmarks/decode.py --shaped 7b --layers 4                 # quick: 4 of 32 layers
    python benchmarks/decode.py --shaped 7b --kinds Q4_0,Q4_K_M --threads 1,2 --busy --repeats 3

For each file kind and thread count (and, with ``--busy``, again beside a competing busy-looping
process), alternating the engines within every repetition, medians of:

* decode tok/s: 32 greedy tokens after a short prompt, over tokens 2..N;
* prefill tok/s: a 512-token prompt (real Code Llama tokens), cold, to its first token;
* TTFT reused: that prompt answered, then the same prompt plus 6 tokens (both engines keep the
  KV of the first and run only the 6 new tokens);
* GB/s: the weight bytes one decode step streams (the file minus the token-embedding table, of
  which a step reads one row) × decode tok/s, and its fraction of the machine's read bandwidth on
  that many threads (benchmarks/membw.py; measured once, without the busy process);
* memory: in a fresh subprocess per engine and file (one process would mix their pages), the
  RSS after the imports, after loading, and after a 512-token prompt and 32 decoded tokens; the
  model's share is the increase over the imports (both engines map their weights from a file, so
  file pages count once touched; the KV cache is included: llama.cpp's fp16 for ``n_ctx``
  positions, ours fp32, grown to the positions used).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine import long_prompt  # noqa: E402  (benchmarks/engine.py)

DECODE_PROMPT = 'def quicksort(items):\n    """Sort a list."""\n'


def median(xs):
    return statistics.median(xs)


class Ours:
    """Our generate_stream on a loaded model: PyTorch (eager) or the CPU kernel (NativeModel)."""

    def __init__(self, loaded, name):
        self.loaded, self.name = loaded, name

    def decode(self, ids, n):
        from jupyter_codellama.engine.generation import GenerationRequest, generate_stream

        r = generate_stream(
            self.loaded.model, self.loaded.tokenizer, GenerationRequest(list(ids), max_new_tokens=n), eos_token_ids=()
        )
        return (len(r.tokens) - 1) / (r.timings["total_s"] - r.timings["first_token_s"]), r.tokens

    def ttft(self, base, typed, n):
        from jupyter_codellama.engine.generation import GenerationRequest, PrefixCache, generate_stream

        def first(ids, cache, new=1):
            r = generate_stream(
                self.loaded.model,
                self.loaded.tokenizer,
                GenerationRequest(list(ids), max_new_tokens=new),
                eos_token_ids=(),
                prefix_cache=cache,
            )
            return r

        cold = first(base + typed, None).timings["first_token_s"]
        cache = PrefixCache(2 << 30)
        first(base, cache)
        r = first(base + typed, cache, n)
        t = r.timings
        return cold, t["first_token_s"], (len(r.tokens) - 1) / (t["total_s"] - t["first_token_s"])


class LlamaCpp:
    name = "llama.cpp"

    def __init__(self, gguf, threads, n_ctx):
        from llama_cpp import Llama

        self.llm = Llama(
            model_path=str(gguf), n_ctx=n_ctx, n_batch=512, n_threads=threads, n_threads_batch=threads, verbose=False
        )

    def _generate(self, ids):
        return self.llm.generate(list(ids), temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0, reset=True)

    def decode(self, ids, n):
        self.llm.reset()
        tokens, t_first = [], None
        for token in self._generate(ids):
            tokens.append(token)
            if len(tokens) == 1:
                t_first = time.perf_counter()
            if len(tokens) == n:
                break
        return (n - 1) / (time.perf_counter() - t_first), tokens

    def ttft(self, base, typed, n):
        def first(ids):
            t = time.perf_counter()
            next(iter(self._generate(ids)))
            return time.perf_counter() - t

        self.llm.reset()
        cold = first(base + typed)
        self.llm.reset()
        first(base)
        # llama-cpp-python reuses the longest common prefix
        t = time.perf_counter()
        count, t_first = 0, None
        for _token in self._generate(base + typed):
            count += 1
            if count == 1:
                t_first = time.perf_counter()
            if count == n:
                break
        return cold, t_first - t, (count - 1) / (time.perf_counter() - t_first)


def agree(a, b):
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


# ------------------------------------------------------------------------------------------------
# --shaped: llama.cpp against our C engine on a Code Llama-shaped GGUF

TYPED_TOKENS = 6


def _rss() -> dict:
    """This process's resident memory from /proc (MB = 1e6 bytes)."""
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0]) * 1024 / 1e6
    return out


def _argmax(logits) -> int:
    return int(logits.argmax())


class ShapedLlamaCpp(LlamaCpp):
    """llama.cpp through llama-cpp-python: greedy, its own KV prefix reuse between calls."""

    def set_threads(self, n: int) -> None:
        import llama_cpp

        n = n or os.cpu_count() or 1  # "auto": llama.cpp's own default, every core
        self.llm.n_threads = self.llm.n_threads_batch = n
        self.llm.context_params.n_threads = self.llm.context_params.n_threads_batch = n
        llama_cpp.llama_set_n_threads(self.llm._ctx.ctx, n, n)

    def prefill_and_reuse(self, base, typed):
        """Seconds to the first token of ``base`` (cold), then of ``base + typed`` (reused)."""
        self.llm.reset()
        t = time.perf_counter()
        next(iter(self._generate(base)))
        cold = time.perf_counter() - t
        # generate(reset=True) keeps the KV of the longest common prefix with the last prompt
        t = time.perf_counter()
        next(iter(self._generate(base + typed)))
        return cold, time.perf_counter() - t

    def close(self) -> None:
        self.llm.close()
        self.llm = None


class ShapedOurs:
    """Our C engine (jupyter_codellama.engine.native), greedy, prefix reuse by cropping its cache."""

    name = "ours"
    #: the kernel's activations (--activations): "int8" (the default) or "fp32"
    activations = "int8"
    #: the kernel's KV cache (--kv-cache): "fp16" (the default) or "fp32"
    kv_cache = "fp16"

    def __init__(self, gguf: Path, threads: int, n_ctx: int):
        from jupyter_codellama.engine.native import NativeModel

        self.gguf = gguf
        self.model = NativeModel.open(gguf, n_threads=threads, activations=self.activations, kv_cache=self.kv_cache)

    def set_threads(self, n: int) -> None:
        if hasattr(self.model, "pick_threads"):  # 0 ("auto"): the free cores, decided per request
            self.model.fixed_threads = n or None
            self.model.set_threads(n or 1)
            self.model.pick_threads()
        elif hasattr(self.model, "set_threads"):
            self.model.set_threads(n)
        else:  # the documented API has no setter: reopen (the mapping is cheap)
            from jupyter_codellama.engine.native import NativeModel

            self.model.close()
            self.model = NativeModel.open(self.gguf, n_threads=n, activations=self.activations, kv_cache=self.kv_cache)

    def decode(self, ids, n):
        dec = self.model.decoder(self.model.new_cache())
        token = _argmax(dec.prefill(ids))
        t_first = time.perf_counter()
        tokens = [token]
        while len(tokens) < n:
            token = _argmax(dec.step(token))
            tokens.append(token)
        elapsed = time.perf_counter() - t_first
        dec.close()
        return (n - 1) / elapsed, tokens

    def prefill_and_reuse(self, base, typed):
        cache = self.model.new_cache()
        dec = self.model.decoder(cache)
        t = time.perf_counter()
        _argmax(dec.prefill(base))
        cold = time.perf_counter() - t
        dec.close()
        # The new prompt extends the old one: keep its positions, run the typed tokens only.
        cache.crop(len(base))
        dec = self.model.decoder(cache)
        t = time.perf_counter()
        _argmax(dec.prefill(typed))
        reused = time.perf_counter() - t
        dec.close()
        return cold, reused

    def close(self) -> None:
        self.model.close()
        self.model = None


ENGINES = {"llama.cpp": ShapedLlamaCpp, "ours": ShapedOurs}


def rss_probe(engine: str, gguf: str, threads: str, n_ctx: str, ids_json: str) -> None:
    """Subprocess side of the memory measurement: prints one JSON line."""
    ids = json.loads(Path(ids_json).read_text())
    cls = ENGINES[engine]
    if engine == "ours":
        import jupyter_codellama.engine.native  # noqa: F401  (imports count as "before")
    else:
        import llama_cpp  # noqa: F401
    before = _rss()
    side = cls(Path(gguf), int(threads), int(n_ctx))
    loaded = _rss()
    side.prefill_and_reuse(ids["base"], ids["typed"])
    side.decode(ids["prompt"], ids["new_tokens"])
    ran = _rss()
    print(json.dumps({"before": before, "loaded": loaded, "ran": ran}))


def measure_rss(engine: str, gguf: Path, threads: int, n_ctx: int, ids_file: Path) -> dict | None:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--rss-probe",
        engine,
        str(gguf),
        str(threads),
        str(n_ctx),
        str(ids_file),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"  memory probe for {engine} failed: {proc.stderr.strip()[-500:]}")
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def streamed_bytes(gguf: Path) -> int:
    """Weight bytes one decode step reads: every tensor but the embedding table (one row of it)."""
    from gguf import GGUFReader

    r = GGUFReader(str(gguf))
    return sum(int(t.n_bytes) for t in r.tensors if t.name != "token_embd.weight")


class Busy:
    """A competing process spinning on a core while the block runs."""

    def __init__(self, on: bool):
        self.on, self.proc = on, None

    def __enter__(self):
        if self.on:
            self.proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            time.sleep(0.5)
        return self

    def __exit__(self, *exc):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()


def _fmt(x, spec, na="n/a"):
    return na if x is None else format(x, spec)


def _med(xs):
    return median(xs) if xs else None


def shaped_main(args) -> None:
    import shaped_gguf

    from jupyter_codellama.config import PREFILL_CHUNK_TOKENS
    from jupyter_codellama.testing.codellama_tokenizer import build_codellama_tokenizer

    threads = [0 if t.strip() == "auto" else int(t) for t in (args.threads or "1,2").split(",")]
    new_tokens = args.new_tokens or 32
    prompt_tokens = args.prompt_tokens or 512
    repeats = args.repeats or 3
    kinds = [k.strip().upper() for k in args.kinds.split(",") if k.strip()]
    conditions = [(t, False) for t in threads] + ([(t, True) for t in threads] if args.busy else [])

    engines = []
    notes = []
    if not args.no_llama_cpp:
        try:
            import llama_cpp  # noqa: F401

            engines.append("llama.cpp")
        except ImportError:
            notes.append("llama_cpp is not installed (pip install llama-cpp-python, see the README)")
    if not args.no_ours:
        try:
            from jupyter_codellama.engine.native import NativeModel  # noqa: F401

            engines.append("ours")
        except Exception as exc:  # being written: the llama.cpp side runs on its own
            notes.append(f"our engine is not importable ({type(exc).__name__}: {exc}): its columns are n/a")

    tok = build_codellama_tokenizer()
    prompt = tok(DECODE_PROMPT)["input_ids"]
    base = long_prompt(tok, prompt_tokens)
    typed_all = [
        tok(f"    total_{i} = frame[column] * {i}", add_special_tokens=False)["input_ids"][:TYPED_TOKENS]
        for i in range(repeats)
    ]
    assert all(len(t) == TYPED_TOKENS for t in typed_all)
    n_ctx = -(-(prompt_tokens + TYPED_TOKENS + new_tokens + 8) // 256) * 256
    ids_file = Path(shaped_gguf.bench_dir()) / f"decode-probe-ids-{os.getpid()}.json"
    ids_file.write_text(json.dumps({"prompt": prompt, "base": base, "typed": typed_all[0], "new_tokens": new_tokens}))

    try:
        import membw

        bandwidth = {t: membw.read_bandwidth(t or os.cpu_count() or 1) for t in threads}
    except Exception as exc:
        notes.append(f"bandwidth probe failed ({exc})")
        bandwidth = {t: None for t in threads}

    print(
        f"Code Llama-{args.shaped.upper()}-shaped GGUF, random weights, {args.layers or 'all'} layers; "
        f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the start "
        "(other work on the machine slows every figure)"
    )
    print("read bandwidth: " + ", ".join(f"{t} thread(s) {_fmt(b, '.1f')} GB/s" for t, b in bandwidth.items()))
    print(
        f"decode: {new_tokens} greedy tokens after a {len(prompt)}-token prompt; prefill: {len(base)} tokens; "
        f"reused: +{TYPED_TOKENS} tokens; llama.cpp n_ctx {n_ctx}, n_batch 512; ours in chunks of "
        f"{PREFILL_CHUNK_TOKENS} (prefill_chunk_tokens); median of {repeats}"
    )
    for note in notes:
        print(note)

    results = []  # one dict per (kind, threads, busy, engine)
    memory = []
    files = {}
    for kind in kinds:
        t = time.perf_counter()
        gguf = shaped_gguf.shaped_gguf(args.shaped, args.layers, kind, progress=True)
        files[kind] = {
            "path": str(gguf),
            "bytes": gguf.stat().st_size,
            "streamed": streamed_bytes(gguf),
            "ready_s": time.perf_counter() - t,
        }
        print(f"\n{kind}: {gguf} ({files[kind]['bytes'] / 1e9:.2f} GB)", flush=True)
        sides = []
        for name in engines:
            t = time.perf_counter()
            try:
                side = ENGINES[name](gguf, threads[0] or os.cpu_count() or 1, n_ctx)
            except Exception as exc:
                print(f"  {name}: cannot open {gguf.name} ({type(exc).__name__}: {exc}); n/a")
                continue
            side.decode(prompt, 4)  # warm-up: faults the weights in, allocates
            print(f"  {name}: opened and warmed up in {time.perf_counter() - t:.1f} s", flush=True)
            sides.append(side)
        for n_threads, busy in conditions:
            for side in sides:
                side.set_threads(n_threads)
            runs = {s.name: {"decode": [], "cold": [], "reused": [], "tokens": None} for s in sides}
            with Busy(busy):
                for i in range(repeats):
                    order = sides if i % 2 == 0 else sides[::-1]
                    for side in order:
                        tps, toks = side.decode(prompt, new_tokens)
                        runs[side.name]["decode"].append(tps)
                        runs[side.name]["tokens"] = toks
                    for side in order:
                        cold, reused = side.prefill_and_reuse(base, typed_all[i])
                        runs[side.name]["cold"].append(cold)
                        runs[side.name]["reused"].append(reused)
            for name in ENGINES:
                r = runs.get(name)
                row = {
                    "kind": kind,
                    "threads": n_threads,
                    "busy": busy,
                    "engine": name,
                    "decode": _med(r["decode"]) if r else None,
                    "prefill": len(base) / _med(r["cold"]) if r else None,
                    "reused_ms": _med(r["reused"]) * 1000 if r else None,
                    "raw": {k: v for k, v in r.items() if k != "tokens"} if r else None,
                    "tokens": r["tokens"] if r else None,
                }
                if row["decode"]:
                    row["gbps"] = files[kind]["streamed"] * row["decode"] / 1e9
                    bw = bandwidth.get(n_threads)
                    row["bw_frac"] = row["gbps"] / bw if bw else None
                results.append(row)
                row["load_avg"] = os.getloadavg()[0]
                if r:
                    print(
                        f"  {n_threads or 'auto'} thread(s){' + busy' if busy else ''} {name:9s}: decode "
                        f"{row['decode']:.2f} tok/s, prefill {row['prefill']:.1f} tok/s, "
                        f"reused TTFT {row['reused_ms']:.0f} ms (load average {row['load_avg']:.1f})",
                        flush=True,
                    )
        for side in sides:
            side.close()
        del sides
        if not args.no_rss:
            for name in engines:
                m = measure_rss(name, gguf, threads[0] or os.cpu_count() or 1, n_ctx, ids_file)
                memory.append({"kind": kind, "engine": name, **(m or {})})
    ids_file.unlink(missing_ok=True)

    # ---- report
    print(f"\n### Decode, prefill and prefix reuse (median of {repeats})\n")
    print(
        "| file | threads | engine | decode tok/s | prefill tok/s | TTFT reused ms | weights GB/s | of read BW |"
        " same tokens |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---|")
    for row in results:
        ref = next(
            (
                r["tokens"]
                for r in results
                if r["kind"] == row["kind"]
                and r["threads"] == row["threads"]
                and r["busy"] == row["busy"]
                and r["engine"] == "llama.cpp"
            ),
            None,
        )
        same = "n/a"
        if row["tokens"] and ref and row["engine"] != "llama.cpp":
            same = f"{agree(row['tokens'], ref)}/{len(ref)}"
        elif row["engine"] == "llama.cpp" and row["tokens"]:
            same = "(reference)"
        print(
            f"| {row['kind']} | {row['threads'] or 'auto'}{' + busy' if row['busy'] else ''} | {row['engine']} | "
            f"{_fmt(row['decode'], '.2f')} | {_fmt(row['prefill'], '.1f')} | {_fmt(row['reused_ms'], '.0f')} | "
            f"{_fmt(row.get('gbps'), '.1f')} | {_fmt(row.get('bw_frac') and row['bw_frac'] * 100, '.0f')}% | "
            f"{same} |".replace("n/a%", "n/a")
        )
    print(
        "\nweights GB/s = bytes a decode step streams (file minus the embedding table: "
        + ", ".join(f"{k} {v['streamed'] / 1e9:.2f} of {v['bytes'] / 1e9:.2f} GB" for k, v in files.items())
        + ") × decode tok/s; read BW from benchmarks/membw.py ("
        + ", ".join(f"{t or 'all '}T {_fmt(b, '.1f')} GB/s" for t, b in bandwidth.items())
        + ")"
    )

    print("\n### Ratios, ours / llama.cpp (>1: ours better; TTFT as llama.cpp / ours)\n")
    print("| file | threads | decode | prefill | TTFT reused |")
    print("|---|---|---:|---:|---:|")
    for row in results:
        if row["engine"] != "llama.cpp":
            continue
        o = next(
            r
            for r in results
            if r["engine"] == "ours"
            and r["kind"] == row["kind"]
            and r["threads"] == row["threads"]
            and r["busy"] == row["busy"]
        )

        def ratio(a, b):
            return f"{a / b:.2f}x" if a and b else "n/a"

        print(
            f"| {row['kind']} | {row['threads'] or 'auto'}{' + busy' if row['busy'] else ''} | "
            f"{ratio(o['decode'], row['decode'])} | {ratio(o['prefill'], row['prefill'])} | "
            f"{ratio(row['reused_ms'], o['reused_ms'])} |"
        )

    if memory:
        print(f"\n### Memory (fresh process per engine and file, {threads[0]} thread(s); MB = 1e6 bytes)\n")
        print(
            "| file | engine | file MB | RSS after imports | after load | after 512+32 tokens | model's share"
            " | file-backed | anonymous |"
        )
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
        for m in memory:
            size = files[m["kind"]]["bytes"] / 1e6
            if "ran" not in m:
                print(f"| {m['kind']} | {m['engine']} | {size:.0f} | n/a | n/a | n/a | n/a | n/a | n/a |")
                continue
            b, lo, ran = m["before"], m["loaded"], m["ran"]
            print(
                f"| {m['kind']} | {m['engine']} | {size:.0f} | {b['VmRSS']:.0f} | {lo['VmRSS']:.0f} | "
                f"{ran['VmRSS']:.0f} | {ran['VmRSS'] - b['VmRSS']:.0f} | {ran['RssFile'] - b['RssFile']:.0f} | "
                f"{ran['RssAnon'] - b['RssAnon']:.0f} |"
            )
        for name in ENGINES:
            if not any(m["engine"] == name for m in memory):
                print(f"| – | {name} | | n/a | n/a | n/a | n/a | n/a | n/a |")
        print(
            "\nfile-backed pages are clean (the kernel can drop them under pressure); anonymous ones are "
            "not. llama.cpp maps the whole GGUF and also copies repacked weights into anonymous buffers "
            "(its CPU REPACK); ours maps a repacked copy of the GGUF (a pack file in the cache)."
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"args": vars(args), "bandwidth": bandwidth, "files": files, "results": results, "memory": memory},
                indent=1,
            )
        )
        print(f"\nall measurements: {args.json}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--threads",
        default=None,
        help="torch, fast kernel and llama.cpp threads (default 2); with --shaped a comma-separated list (default 1,2)",
    )
    p.add_argument("--new-tokens", type=int, default=None, help="default 128; 32 with --shaped")
    p.add_argument("--prompt-tokens", type=int, default=None, help="default 1500; 512 with --shaped")
    p.add_argument("--repeats", type=int, default=None, help="default 5; 3 with --shaped")
    p.add_argument("--no-llama-cpp", action="store_true", help="our figures only")
    p.add_argument("--activations", choices=("int8", "fp32"), default="int8", help="our kernel's activations")
    p.add_argument("--kv-cache", choices=("fp16", "fp32"), default="fp16", help="our kernel's KV cache")
    g = p.add_argument_group("Code Llama-shaped GGUF (llama.cpp against engine.native)")
    g.add_argument("--shaped", metavar="SIZE", help="random-weight Code Llama GGUF of this size (7b)")
    g.add_argument("--layers", type=int, default=None, help="first N layers only (quick runs)")
    g.add_argument("--kinds", default="Q4_0,Q4_K_M", help="comma-separated file kinds")
    g.add_argument("--busy", action="store_true", help="also measure beside a busy-looping process")
    g.add_argument("--no-ours", action="store_true", help="llama.cpp figures only")
    g.add_argument("--no-rss", action="store_true", help="skip the memory subprocesses")
    g.add_argument("--json", metavar="PATH", help="also write every measurement to this JSON file")
    g.add_argument(
        "--rss-probe", nargs=5, metavar=("ENGINE", "GGUF", "THREADS", "N_CTX", "IDS_JSON"), help=argparse.SUPPRESS
    )
    args = p.parse_args()
    ShapedOurs.activations, ShapedOurs.kv_cache = args.activations, args.kv_cache
    if args.rss_probe:
        return rss_probe(*args.rss_probe)
    if args.shaped:
        return shaped_main(args)
    args.threads = int(args.threads or 2)
    args.new_tokens = args.new_tokens or 128
    args.prompt_tokens = args.prompt_tokens or 1500
    args.repeats = args.repeats or 5

    import torch

    from jupyter_codellama.engine.loading import KernelOptions, LoadOptions, find_embedded_gguf, load_model

    torch.set_num_threads(args.threads)
    loaded = load_model(LoadOptions(model="embedded"), backend="torch")
    gguf = find_embedded_gguf()
    t = time.perf_counter()
    kernel = load_model(
        LoadOptions(model="embedded"),
        backend="kernel",
        kernel=KernelOptions(n_threads=args.threads, activations=args.activations, kv_cache=args.kv_cache),
    )
    prep_s = time.perf_counter() - t
    sides = [Ours(loaded, "ours, eager"), Ours(kernel, "ours, fast")]
    note = ""
    if not args.no_llama_cpp:
        try:
            sides.insert(0, LlamaCpp(gguf, args.threads, n_ctx=args.prompt_tokens + 256))
        except ImportError:
            note = "llama_cpp is not installed (pip install llama-cpp-python, see the README): our figures only"
    tok = loaded.tokenizer
    prompt = tok(DECODE_PROMPT)["input_ids"]
    base = long_prompt(tok, args.prompt_tokens)

    print(f"machine: {args.threads} threads, torch {torch.__version__}; model {gguf.name}")
    print(f"fast path: {kernel.model.description}, loaded in {prep_s:.1f} s")
    if note:
        print(note)
    for side in sides:  # warm-up: first calls allocate, fault pages in, fill caches
        side.decode(prompt, 8)
    speed = {s.name: [] for s in sides}
    cold = {s.name: [] for s in sides}
    reused = {s.name: [] for s in sides}
    long_speed = {s.name: [] for s in sides}
    tokens = {}
    for i in range(args.repeats):
        typed = tok(f"    total_{i} = ", add_special_tokens=False)["input_ids"]
        order = sides if i % 2 == 0 else sides[::-1]
        for side in order:
            tps, toks = side.decode(prompt, args.new_tokens)
            speed[side.name].append(tps)
            tokens[side.name] = toks
        for side in order:
            c, r, ls = side.ttft(base, typed, args.new_tokens)
            cold[side.name].append(c)
            reused[side.name].append(r)
            long_speed[side.name].append(ls)

    ref = tokens["ours, eager"]
    print(
        f"\n{args.new_tokens} greedy tokens; {len(base)}-token prompt (+{len(typed)} typed); median of {args.repeats}\n"
    )
    print(
        f"{'':14s} {'decode tok/s':>13s} {'at ' + str(len(base)) + ' ctx':>11s} {'TTFT cold':>11s} "
        f"{'TTFT reused':>12s}  same tokens as eager"
    )
    for side in sides:
        n = side.name
        same = agree(tokens[n], ref)
        print(
            f"{n:14s} {median(speed[n]):13.1f} {median(long_speed[n]):11.1f} {median(cold[n]) * 1000:9.0f}ms "
            f"{median(reused[n]) * 1000:10.1f}ms  "
            f"{'all ' + str(len(ref)) if same == len(ref) else f'first {same} of {len(ref)}'}"
        )
    f = "ours, fast"
    print()
    print(f"fast / eager decode:         {median(speed[f]) / median(speed['ours, eager']):5.2f}x")
    if "llama.cpp" in speed:
        lc = "llama.cpp"
        print(f"fast / llama.cpp decode:     {median(speed[f]) / median(speed[lc]):5.2f}x")
        print(f"  same, at {len(base)} context: {median(long_speed[f]) / median(long_speed[lc]):5.2f}x")
        print(f"llama.cpp / fast TTFT cold:  {median(cold[lc]) / median(cold[f]):5.2f}x (>1: ours faster)")
        print(f"llama.cpp / fast TTFT reuse: {median(reused[lc]) / median(reused[f]):5.2f}x (>1: ours faster)")


if __name__ == "__main__":
    main()
