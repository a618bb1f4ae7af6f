"""Engine benchmark: load times, time to first token with/without prefix reuse, decode speed.

    python benchmarks/engine.py                      # CPU, embedded model (what CI machines have)
    python benchmarks/engine.py --shaped 7b --layers 32 --quantization 4bit   # GPU, 7B-shaped NF4

Every comparison is measured in the same run, alternating the two sides, and reported as a
median with the ratio, because these machines are noisy.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def median(xs):
    return statistics.median(xs)


def long_prompt(tokenizer, n_tokens: int) -> list[int]:
    text = "".join(
        f"def transform_{i}(frame, column='value_{i}'):\n"
        f'    """Scale column {i} of the frame."""\n'
        f"    return frame[column] * {i} + {i * 7}\n\n"
        for i in range(n_tokens // 20 + 1)
    )
    ids = tokenizer(text)["input_ids"]
    assert len(ids) >= n_tokens, "prompt generator too short"
    return ids[:n_tokens]


def bench_loads(args) -> dict:
    """Cold = GGUF → safetensors conversion + load; warm = load from the converted cache."""
    from jupyter_codellama.engine.loading import LoadOptions, load_model

    results = {}
    if args.model == "embedded" and not args.skip_cold:
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            load_model(LoadOptions(model="embedded", cache_dir=tmp))
            results["cold_load_s"] = time.perf_counter() - t
    warm = []
    for _ in range(3):
        t = time.perf_counter()
        loaded = load_model(LoadOptions(model=args.model, quantization=args.quantization, device=args.device))
        warm.append(time.perf_counter() - t)
    results["warm_load_s"] = median(warm)
    return results, loaded


def bench_ttft(loaded, n_tokens: int, repeats: int) -> dict:
    """A ~n-token prompt, then the same prompt plus a few typed characters."""
    from jupyter_codellama.engine.generation import GenerationRequest, PrefixCache, generate_stream

    tok = loaded.tokenizer
    base = long_prompt(tok, n_tokens)
    cold, reused = [], []
    for i in range(repeats):
        typed = tok(f"    total_{i} = ", add_special_tokens=False)["input_ids"]
        cache = PrefixCache(2 << 30)
        for use_cache, sink in ((False, cold), (True, reused)):
            if use_cache:
                generate_stream(
                    loaded.model, tok, GenerationRequest(base, max_new_tokens=1), eos_token_ids=(), prefix_cache=cache
                )
            r = generate_stream(
                loaded.model,
                tok,
                GenerationRequest(base + typed, max_new_tokens=1),
                eos_token_ids=(),
                prefix_cache=cache if use_cache else None,
            )
            sink.append(r.timings["first_token_s"])
    return {
        "prompt_tokens": len(base),
        "ttft_cold_s": median(cold),
        "ttft_reused_s": median(reused),
        "ttft_ratio": median(cold) / median(reused),
    }


def bench_decode(loaded, n_new: int, repeats: int) -> dict:
    """Our loop vs plain ``model.generate`` (greedy, same prompt, same token count)."""
    import torch

    from jupyter_codellama.engine.generation import GenerationRequest, generate_stream, input_device

    tok, model = loaded.tokenizer, loaded.model
    prompt = tok('def quicksort(items):\n    """Sort a list."""\n')["input_ids"]
    ours, theirs = [], []
    same = True
    for _ in range(repeats):
        r = generate_stream(model, tok, GenerationRequest(prompt, max_new_tokens=n_new), eos_token_ids=())
        ours.append((len(r.tokens) - 1) / (r.timings["total_s"] - r.timings["first_token_s"]))
        if loaded.backend != "torch":  # the CPU kernel has no model.generate (decode.py compares it)
            continue
        ids = torch.tensor([prompt], device=input_device(model))
        with torch.inference_mode():
            # eos_token_id=None: both sides run exactly n_new tokens, as ours does with no EOS ids.
            plain = dict(do_sample=False, eos_token_id=None)
            model.generate(ids, max_new_tokens=1, **plain)  # warm-up
            t = time.perf_counter()
            out = model.generate(ids, max_new_tokens=n_new, **plain)
            total = time.perf_counter() - t
            t = time.perf_counter()
            model.generate(ids, max_new_tokens=1, **plain)
            first = time.perf_counter() - t
        theirs.append((n_new - 1) / (total - first))
        same &= out[0, len(prompt) :].tolist() == r.tokens
    if not theirs:
        return {"decode_tok_s_ours": median(ours)}
    return {
        "decode_tok_s_ours": median(ours),
        "decode_tok_s_generate": median(theirs),
        "decode_ratio": median(ours) / median(theirs),
        "same_tokens": same,
    }


def shaped_model_folder(size: str, layers: int) -> str:
    from jupyter_codellama.config import default_cache_dir
    from jupyter_codellama.testing.random_model import build_codellama_shaped_model

    folder = Path(default_cache_dir()) / "bench-models" / f"codellama-{size}-l{layers}"
    return str(build_codellama_shaped_model(folder, size=size, num_layers=layers, scale=1, dtype="bfloat16"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="embedded")
    p.add_argument("--shaped", metavar="SIZE", help="random-weight Code Llama of this size (7b, 13b…)")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--quantization", default="auto")
    p.add_argument("--device", default="auto")
    p.add_argument("--prompt-tokens", type=int, default=1500)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--skip-cold", action="store_true")
    args = p.parse_args()

    import torch

    if args.shaped:
        args.model = shaped_model_folder(args.shaped, args.layers)
        args.skip_cold = True
    t = time.perf_counter()
    import transformers  # noqa: F401 - timed: a one-off cost of the first load in a kernel

    import_s = time.perf_counter() - t
    loads, loaded = bench_loads(args)
    print(
        f"machine: {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
        f"device {loaded.device}{' ' + torch.cuda.get_device_name() if loaded.device.startswith('cuda') else ''}"
    )
    print(f"model: {loaded.spec.name} ({loaded.quantization}, {loaded.dtype}, {loaded.backend})")
    print(f"import transformers:         {import_s:6.2f} s (once per kernel)")
    if "cold_load_s" in loads:
        print(f"cold load (GGUF conversion): {loads['cold_load_s']:6.2f} s")
    print(f"warm load (median of 3):     {loads['warm_load_s']:6.2f} s")
    if loaded.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    ttft = bench_ttft(loaded, args.prompt_tokens, args.repeats)
    print(f"time to first token, {ttft['prompt_tokens']}-token prompt (median of {args.repeats}):")
    print(f"  without prefix reuse:      {ttft['ttft_cold_s'] * 1000:8.1f} ms")
    print(f"  with prefix reuse:         {ttft['ttft_reused_s'] * 1000:8.1f} ms   ({ttft['ttft_ratio']:.1f}x faster)")
    dec = bench_decode(loaded, args.new_tokens, max(3, args.repeats // 2 + 1))
    print(f"decode, {args.new_tokens} greedy tokens (median):")
    print(f"  our engine:                {dec['decode_tok_s_ours']:8.1f} tok/s")
    if "decode_tok_s_generate" in dec:
        print(
            f"  plain model.generate:      {dec['decode_tok_s_generate']:8.1f} tok/s   "
            f"(ours/generate = {dec['decode_ratio']:.2f}, identical tokens: {dec['same_tokens']})"
        )
    if loaded.device.startswith("cuda"):
        print(f"peak GPU memory:             {torch.cuda.max_memory_allocated() / 2**30:6.2f} GiB")


if __name__ == "__main__":
    main()
