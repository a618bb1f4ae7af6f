"""A Code Llama-shaped GGUF with random weights and the real Code Llama tokenizer.

    python benchmarks/shaped_gguf.py                       # 7B, 32 layers, Q4_0 and Q4_K_M
    python benchmarks/shaped_gguf.py --layers 4 --verify   # a cut-down 4-layer twin, then check it
    python benchmarks/shaped_gguf.py --drop-f16            # delete the 13.5 GB F16 once quantized

    from shaped_gguf import shaped_gguf                    # from another benchmark script
    path = shaped_gguf("7b", layers=4, kind="Q4_0")

No weights are downloaded: the file has Code Llama's exact tensor shapes, hyper-parameters and
tokenizer, so speed and memory are those of the real model (the generated text is noise).

How it is built (once; later calls return the cached path under
``$JUPYTER_CODELLAMA_CACHE/bench/``):

1. An F16 GGUF, architecture ``llama``, llama.cpp's tensor names, random weights: normal with
   std 0.02 (norm weights 1 + N(0, 0.02)), each tensor from its own seeded generator (seed +
   tensor name), so a file is reproducible and a cut-down ``layers=N`` file has exactly the
   first N layers of the full one. It is written tensor by tensor (``GGUFWriter``: all tensor
   infos, then header/KV/tensor-info, then ``write_tensor_data`` one at a time), so the 13.5 GB
   never sit in memory (peak ≈ the largest tensor in F16, 0.26 GB, plus 64 MB of float32 scratch).
2. Quantized by llama.cpp's own quantizer through llama-cpp-python
   (``llama_model_quantize``, Q4_0 / Q4_K_M / ...), exactly as ``llama-quantize`` would: the
   output tensor becomes Q6_K as in published Code Llama GGUFs.

The tokenizer is the real Code Llama one (``jupyter_codellama.testing.gguf_tokenizer``).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import os
import re
import sys
import time
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: Bump when the file contents change, so stale cached files are not reused.
FORMAT_VERSION = 1
SEED = 1234
WEIGHT_STD = 0.02

# Code Llama's hyper-parameters besides the shape (the same for every size).
ROPE_THETA = 1e6
CONTEXT_LENGTH = 16384
RMS_EPS = 1e-5

from jupyter_codellama.testing.gguf_tokenizer import EOT_ID, MID_ID, PRE_ID, SUF_ID, add_codellama_tokenizer  # noqa: E402

KINDS = ("Q4_0", "Q4_K_M", "Q4_1", "Q5_K_M", "Q8_0", "Q6_K")


def bench_dir(cache_dir: Path | str | None = None) -> Path:
    from jupyter_codellama.config import default_cache_dir

    root = Path(cache_dir) if cache_dir is not None else Path(default_cache_dir())
    path = root / "bench"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _tokenizer_cache(cache_dir: Path | str | None) -> Path | None:
    return None if cache_dir is None else Path(cache_dir) / "test-assets"


# --------------------------------------------------------------------------------------------
# the F16 file


def _shape_of(size: str):
    from jupyter_codellama.models import _SHAPES

    try:
        return _SHAPES[size.lower()]
    except KeyError:
        raise ValueError(f"unknown size {size!r}; one of {', '.join(_SHAPES)}") from None


def tensor_plan(shape, layers: int) -> list[tuple[str, tuple[int, ...], bool]]:
    """(name, numpy shape, is_norm) in llama.cpp's names; numpy shape = (rows, columns)."""
    h, f, v = shape.hidden_size, shape.intermediate_size, shape.vocab_size
    kv = shape.num_kv_heads * (h // shape.num_heads)
    plan = [("token_embd.weight", (v, h), False)]
    for i in range(layers):
        b = f"blk.{i}."
        plan += [
            (b + "attn_norm.weight", (h,), True),
            (b + "attn_q.weight", (h, h), False),
            (b + "attn_k.weight", (kv, h), False),
            (b + "attn_v.weight", (kv, h), False),
            (b + "attn_output.weight", (h, h), False),
            (b + "ffn_norm.weight", (h,), True),
            (b + "ffn_gate.weight", (f, h), False),
            (b + "ffn_up.weight", (f, h), False),
            (b + "ffn_down.weight", (h, f), False),
        ]
    plan += [("output_norm.weight", (h,), True), ("output.weight", (v, h), False)]
    return plan


def _random_tensor(name: str, shp: tuple[int, ...], is_norm: bool, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    if is_norm:  # 1-D tensors stay F32, as llama.cpp's converter keeps them
        x = rng.standard_normal(shp, dtype=np.float32)
        x *= WEIGHT_STD
        x += 1.0
        return x
    out = np.empty(shp, dtype=np.float16)
    rows = max(1, (16 << 20) // shp[1])  # 16M floats at a time: 64 MB of float32 scratch
    for r in range(0, shp[0], rows):
        x = rng.standard_normal((min(rows, shp[0] - r), shp[1]), dtype=np.float32)
        x *= WEIGHT_STD
        out[r : r + len(x)] = x
    return out


def write_f16(
    path: Path,
    size: str = "7b",
    layers: int | None = None,
    seed: int = SEED,
    tokenizer_cache: Path | None = None,
    progress: bool = False,
) -> Path:
    """Write the F16 GGUF to ``path`` (not atomic; see ``shaped_gguf``)."""
    import gguf

    shape = _shape_of(size)
    n_layers = shape.num_layers if layers is None else layers
    if not 1 <= n_layers <= shape.num_layers:
        raise ValueError(f"layers must be 1..{shape.num_layers}, not {layers}")
    plan = tensor_plan(shape, n_layers)

    w = gguf.GGUFWriter(path, "llama")
    w.add_name(f"CodeLlama-{size.upper()}-shaped random weights ({n_layers} layers)")
    w.add_description(
        f"random N(0, {WEIGHT_STD}) weights with Code Llama {size.upper()}'s shape and "
        f"tokenizer, for benchmarks (jupyter_codellama benchmarks/shaped_gguf.py v{FORMAT_VERSION})"
    )
    w.add_vocab_size(shape.vocab_size)
    w.add_context_length(CONTEXT_LENGTH)
    w.add_embedding_length(shape.hidden_size)
    w.add_block_count(n_layers)
    w.add_feed_forward_length(shape.intermediate_size)
    w.add_rope_dimension_count(shape.hidden_size // shape.num_heads)
    w.add_head_count(shape.num_heads)
    w.add_head_count_kv(shape.num_kv_heads)
    w.add_layer_norm_rms_eps(RMS_EPS)
    w.add_rope_freq_base(ROPE_THETA)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    add_codellama_tokenizer(w, tokenizer_cache, shape.vocab_size)
    for name, shp, is_norm in plan:
        dt = np.dtype(np.float32 if is_norm else np.float16)
        w.add_tensor_info(name, shp, dt, int(np.prod(shp)) * dt.itemsize)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    t0 = time.perf_counter()
    for k, (name, shp, is_norm) in enumerate(plan):
        w.write_tensor_data(_random_tensor(name, shp, is_norm, seed))
        if progress and (k % 18 == 0 or k == len(plan) - 1):
            print(f"  f16: {k + 1}/{len(plan)} tensors, {time.perf_counter() - t0:.0f} s", flush=True)
    w.close()
    return path


# --------------------------------------------------------------------------------------------
# quantizing with llama.cpp


def llama_ftype(kind: str) -> int:
    import llama_cpp

    try:
        return getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{kind.upper()}")
    except AttributeError:
        raise ValueError(f"llama.cpp has no file type {kind!r}") from None


@contextlib.contextmanager
def _output_to(log: Path):
    """Send this process's C-level stdout/stderr (llama.cpp's per-tensor log) to ``log``."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(log, "wb") as fh:
        os.dup2(fh.fileno(), 1)
        os.dup2(fh.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def quantize(src: Path, dst: Path, kind: str, nthread: int = 2) -> None:
    """``llama-quantize src dst kind`` through llama-cpp-python (not atomic).

    llama.cpp's log goes to ``dst`` + ``.log`` (kept when it fails).
    """
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.nthread = nthread
    params.ftype = llama_ftype(kind)
    log = dst.with_name(dst.name + ".log")
    with _output_to(log):
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0:
        tail = log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"llama_model_quantize({src.name} -> {kind}) failed with code {rc}; log {log}:\n{tail}")
    log.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------
# the cached files


def file_name(size: str, layers: int, kind: str) -> str:
    return f"codellama-{size.lower()}-shaped-v{FORMAT_VERSION}-{layers}L-{kind.upper()}.gguf"


@contextlib.contextmanager
def _locked(folder: Path):
    """One builder at a time per cache folder (other processes wait for it)."""
    with open(folder / ".shaped_gguf.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


#: Seconds each file took to build in this process (for reports), keyed by file name.
BUILD_SECONDS: dict[str, float] = {}


def shaped_gguf(
    size: str = "7b",
    layers: int | None = None,
    kind: str = "Q4_0",
    cache_dir: Path | str | None = None,
    *,
    keep_f16: bool = True,
    nthread: int = 2,
    progress: bool = False,
) -> Path:
    """Path of the cached Code Llama-shaped GGUF (``kind`` F16, Q4_0, Q4_K_M, ...), built if missing.

    ``layers`` cuts the model to its first N layers (default: all). ``keep_f16=False`` deletes
    the F16 file after quantizing (13.5 GB for 7B); a later call for another kind rebuilds it.
    """
    shape = _shape_of(size)
    n_layers = shape.num_layers if layers is None else int(layers)
    kind = kind.upper()
    folder = bench_dir(cache_dir)
    target = folder / file_name(size, n_layers, kind)
    if target.is_file():
        return target
    with _locked(folder):
        if target.is_file():  # built by another process while we waited
            return target
        f16 = folder / file_name(size, n_layers, "F16")
        if not f16.is_file():
            tmp = f16.with_suffix(f".tmp{os.getpid()}")
            t = time.perf_counter()
            try:
                write_f16(tmp, size, n_layers, tokenizer_cache=_tokenizer_cache(cache_dir), progress=progress)
                os.replace(tmp, f16)
            finally:
                tmp.unlink(missing_ok=True)
            BUILD_SECONDS[f16.name] = time.perf_counter() - t
            if progress:
                print(
                    f"  wrote {f16.name} ({f16.stat().st_size / 1e9:.2f} GB) in {BUILD_SECONDS[f16.name]:.0f} s",
                    flush=True,
                )
        if kind == "F16":
            return f16
        tmp = target.with_suffix(f".tmp{os.getpid()}")
        t = time.perf_counter()
        try:
            quantize(f16, tmp, kind, nthread)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        BUILD_SECONDS[target.name] = time.perf_counter() - t
        if progress:
            print(
                f"  quantized {target.name} ({target.stat().st_size / 1e9:.2f} GB) in "
                f"{BUILD_SECONDS[target.name]:.0f} s",
                flush=True,
            )
        if not keep_f16:
            f16.unlink(missing_ok=True)
    return target


def drop_f16(size: str = "7b", layers: int | None = None, cache_dir: Path | str | None = None) -> None:
    n_layers = _shape_of(size).num_layers if layers is None else int(layers)
    (bench_dir(cache_dir) / file_name(size, n_layers, "F16")).unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------
# verification


VERIFY_TEXT = "def remove_non_ascii(s: str) -> str:"
FIM_PREFIX = 'def remove_non_ascii(s: str) -> str:\n    """ '
FIM_SUFFIX = "\n    return result\n"
#: transformers' expected ids for CodeLlama-7b on ``prefix <FILL_ME> suffix`` (TOOLCHAIN.md).
FIM_EXPECTED = [
    1,
    32007,
    822,
    3349,
    29918,
    5464,
    29918,
    294,
    18869,
    29898,
    29879,
    29901,
    851,
    29897,
    1599,
    851,
    29901,
    13,
    1678,
    9995,
    29871,
    32008,
    13,
    1678,
    736,
    1121,
    13,
    32009,
]
SPACE_ID = 29871  # "▁"


def llama_cpp_fim_ids(llm, prefix: str, suffix: str) -> list[int]:
    """Code Llama's infilling prompt from llama.cpp's tokenizer, as llama-server assembles it.

    ``<s> ▁<PRE> prefix ▁<SUF> suffix ▁<MID>`` with the infilling ids llama.cpp read from the
    file; the suffix loses the "▁" SentencePiece puts in front (llama-server's
    ``suff_rm_leading_spc``), as Meta's reference does.
    """
    import llama_cpp

    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    pre, suf, mid = (
        llama_cpp.llama_vocab_fim_pre(vocab),
        llama_cpp.llama_vocab_fim_suf(vocab),
        llama_cpp.llama_vocab_fim_mid(vocab),
    )
    p = llm.tokenize(prefix.encode(), add_bos=False, special=False)
    s = llm.tokenize(suffix.encode(), add_bos=False, special=False)
    if s and s[0] == SPACE_ID:
        s = s[1:]
    return [llm.token_bos(), pre] + p + [suf] + s + [mid]


def _reference_text() -> str:
    """Real source text for the tokenizer comparison: this repository's Python modules."""
    root = Path(__file__).resolve().parents[1] / "jupyter_codellama"
    return "\n".join(p.read_text(encoding="utf-8") for p in sorted(root.rglob("*.py"))[:40])


def verify(path: Path, cache_dir: Path | str | None = None, n_tokens: int = 8) -> dict:
    """Load ``path`` in llama.cpp, compare its tokenizer with transformers', generate a few tokens."""
    import llama_cpp

    from jupyter_codellama.testing.codellama_tokenizer import build_codellama_tokenizer

    hf = build_codellama_tokenizer(_tokenizer_cache(cache_dir))
    t = time.perf_counter()
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=1024, n_threads=1, verbose=False)
    load_s = time.perf_counter() - t
    out: dict = {"file": path.name, "load_s": load_s, "n_vocab": llm.n_vocab()}
    ours = llm.tokenize(VERIFY_TEXT.encode(), add_bos=True, special=False)
    ref = hf(VERIFY_TEXT)["input_ids"]
    out["plain_ids"] = ours
    out["plain_match"] = ours == ref
    fim = llama_cpp_fim_ids(llm, FIM_PREFIX, FIM_SUFFIX)
    out["fim_match"] = fim == FIM_EXPECTED
    hf_fim = hf(FIM_PREFIX + "<FILL_ME>" + FIM_SUFFIX)["input_ids"]
    out["fim_hf_match"] = hf_fim == FIM_EXPECTED
    # A larger comparison on real code, line by line (SentencePiece adds "▁" to each call's start).
    # Lines naming special pieces ("</s>", "▁<EOT>") or transformers' "<FILL_ME>" marker are left
    # out: transformers parses those in text, llama.cpp with parse_special=False does not.
    special = re.compile(r"<s>|</s>|<unk>|<FILL_ME>|<(PRE|SUF|MID|EOT)>|<unused_")
    lines = [ln for ln in _reference_text().splitlines() if ln.strip()]
    out["lines_skipped"] = sum(1 for ln in lines if special.search(ln))
    lines = [ln for ln in lines if not special.search(ln)]
    mismatches = [
        ln
        for ln in lines
        if llm.tokenize(ln.encode(), add_bos=False, special=False) != hf(ln, add_special_tokens=False)["input_ids"]
    ]
    whole = "\n".join(lines)[:20000]
    out["lines_compared"] = len(lines)
    out["line_mismatches"] = len(mismatches)
    out["first_mismatch"] = mismatches[0] if mismatches else None
    # Runs of spaces exercise the -1e9 scores of the whitespace pieces (see the module doc).
    runs = [f"x{' ' * n}y" for n in range(1, 40)] + [f"\n{' ' * n}return" for n in range(1, 40)]
    out["whitespace_match"] = all(
        llm.tokenize(t.encode(), add_bos=False, special=False) == hf(t, add_special_tokens=False)["input_ids"]
        for t in runs
    )
    out["block_match"] = llm.tokenize(whole.encode(), add_bos=True, special=False) == hf(whole)["input_ids"]
    # Special pieces round-trip: with special parsing, "▁<PRE>" text gives 32007? (control tokens
    # are matched by their text only when parse_special is on).
    out["detok_fim"] = [llm.detokenize([i], special=True).decode() for i in (PRE_ID, SUF_ID, MID_ID, EOT_ID)]
    t = time.perf_counter()
    gen = []
    for tok in llm.generate(ours, temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0, reset=True):
        gen.append(tok)
        if len(gen) == n_tokens:
            break
    out["generated"] = gen
    out["generate_s"] = time.perf_counter() - t
    del llm
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="7b")
    p.add_argument("--layers", type=int, default=None, help="first N layers only (default: all)")
    p.add_argument("--kinds", default="Q4_0,Q4_K_M", help="comma-separated llama.cpp file types")
    p.add_argument("--cache-dir", default=None, help="cache root (default: the project's cache)")
    p.add_argument("--drop-f16", action="store_true", help="delete the F16 file once quantized")
    p.add_argument("--nthread", type=int, default=2, help="quantizer threads")
    p.add_argument("--verify", action="store_true", help="load each file in llama.cpp and check it")
    args = p.parse_args(argv)

    kinds = [k.strip().upper() for k in args.kinds.split(",") if k.strip()]
    for kind in kinds:
        t = time.perf_counter()
        path = shaped_gguf(args.size, args.layers, kind, args.cache_dir, nthread=args.nthread, progress=True)
        print(f"{path}  {path.stat().st_size / 1e9:.2f} GB  ({time.perf_counter() - t:.0f} s)", flush=True)
    if args.drop_f16:
        drop_f16(args.size, args.layers, args.cache_dir)
    if BUILD_SECONDS:
        print("build times: " + ", ".join(f"{k} {v:.0f} s" for k, v in BUILD_SECONDS.items()))
    if args.verify:
        for kind in kinds:
            path = shaped_gguf(args.size, args.layers, kind, args.cache_dir)
            r = verify(path, args.cache_dir)
            ok = (
                r["plain_match"]
                and r["fim_match"]
                and r["block_match"]
                and r["whitespace_match"]
                and not r["line_mismatches"]
            )
            print(f"\n{r['file']}: loaded in {r['load_s']:.1f} s, n_vocab {r['n_vocab']}")
            print(f"  {VERIFY_TEXT!r} -> {r['plain_ids']} (same as CodeLlamaTokenizer: {r['plain_match']})")
            print(f"  FIM prompt ids = transformers' expected: {r['fim_match']} (our HF build: {r['fim_hf_match']})")
            print(
                f"  {r['lines_compared']} source lines ({r['lines_skipped']} naming special pieces left out), "
                f"{r['line_mismatches']} differ"
                + (f" (first: {r['first_mismatch']!r})" if r["first_mismatch"] else "")
                + f"; 20k-char block identical: {r['block_match']}; runs of 1-39 spaces: "
                f"{r['whitespace_match']}"
            )
            print(f"  FIM pieces: {r['detok_fim']}")
            print(f"  generated {r['generated']} in {r['generate_s']:.1f} s")
            print("  OK" if ok else "  MISMATCH")


if __name__ == "__main__":
    main()
