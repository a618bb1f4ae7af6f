"""Decode benchmark: our engine (eager and fast path) against llama.cpp on the same GGUF weights.

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
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine import long_prompt  # noqa: E402  (benchmarks/engine.py)

DECODE_PROMPT = "def quicksort(items):\n    \"\"\"Sort a list.\"\"\"\n"


def median(xs):
    return statistics.median(xs)


class Ours:
    """Our generate_stream with or without the fast decoder."""

    def __init__(self, loaded, decoder, name):
        self.loaded, self.decoder, self.name = loaded, decoder, name

    def decode(self, ids, n):
        from jupyter_codellama.engine.generation import GenerationRequest, generate_stream

        r = generate_stream(self.loaded.model, self.loaded.tokenizer,
                            GenerationRequest(list(ids), max_new_tokens=n), eos_token_ids=(),
                            fast_decoder=self.decoder)
        return (len(r.tokens) - 1) / (r.timings["total_s"] - r.timings["first_token_s"]), r.tokens

    def ttft(self, base, typed, n):
        from jupyter_codellama.engine.generation import GenerationRequest, PrefixCache, generate_stream

        def first(ids, cache, new=1):
            r = generate_stream(self.loaded.model, self.loaded.tokenizer,
                                GenerationRequest(list(ids), max_new_tokens=new), eos_token_ids=(),
                                prefix_cache=cache, fast_decoder=self.decoder)
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

        self.llm = Llama(model_path=str(gguf), n_ctx=n_ctx, n_batch=512, n_threads=threads,
                         n_threads_batch=threads, verbose=False)

    def _generate(self, ids):
        return self.llm.generate(list(ids), temp=0.0, top_k=1, top_p=1.0, min_p=0.0,
                                 repeat_penalty=1.0, reset=True)

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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2, help="torch, fast kernel and llama.cpp threads")
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--prompt-tokens", type=int, default=1500)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--no-llama-cpp", action="store_true", help="our figures only")
    args = p.parse_args()

    import torch

    from jupyter_codellama.engine import fast
    from jupyter_codellama.engine.loading import LoadOptions, find_embedded_gguf, load_model

    torch.set_num_threads(args.threads)
    loaded = load_model(LoadOptions(model="embedded"))
    gguf = find_embedded_gguf()
    t = time.perf_counter()
    decoder = fast.prepare_fast_decoder(loaded.model, gguf_path=gguf, n_threads=args.threads)
    prep_s = time.perf_counter() - t
    sides = [Ours(loaded, None, "ours, eager"), Ours(loaded, decoder, "ours, fast")]
    note = ""
    if not args.no_llama_cpp:
        try:
            sides.insert(0, LlamaCpp(gguf, args.threads, n_ctx=args.prompt_tokens + 256))
        except ImportError:
            note = ("llama_cpp is not installed (pip install llama-cpp-python, see the README): "
                    "our figures only")
    tok = loaded.tokenizer
    prompt = tok(DECODE_PROMPT)["input_ids"]
    base = long_prompt(tok, args.prompt_tokens)

    print(f"machine: {args.threads} threads, torch {torch.__version__}; model {gguf.name}")
    print(f"fast path: {decoder.description}, prepared in {prep_s:.1f} s")
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
    print(f"\n{args.new_tokens} greedy tokens; {len(base)}-token prompt (+{len(typed)} typed); "
          f"median of {args.repeats}\n")
    print(f"{'':14s} {'decode tok/s':>13s} {'at ' + str(len(base)) + ' ctx':>11s} {'TTFT cold':>11s} "
          f"{'TTFT reused':>12s}  same tokens as eager")
    for side in sides:
        n = side.name
        same = agree(tokens[n], ref)
        print(f"{n:14s} {median(speed[n]):13.1f} {median(long_speed[n]):11.1f} {median(cold[n]) * 1000:9.0f}ms "
              f"{median(reused[n]) * 1000:10.1f}ms  "
              f"{'all ' + str(len(ref)) if same == len(ref) else f'first {same} of {len(ref)}'}")
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
