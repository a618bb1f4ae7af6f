import pytest

from jupyter_codellama.models import CATALOGUE, EMBEDDED, UnknownModelError, resolve_model


def test_catalogue_has_all_twelve_codellama_checkpoints_and_the_embedded_model():
    repos = {s.repo_id for s in CATALOGUE if s.family == "codellama"}
    expected = {
        f"codellama/CodeLlama-{size}{suffix}-hf"
        for size in ("7b", "13b", "34b", "70b")
        for suffix in ("", "-Python", "-Instruct")
    }
    assert repos == expected
    assert resolve_model(EMBEDDED).family == "embedded"


@pytest.mark.parametrize(
    "name, infill",
    [
        ("7b", True),
        ("7b-instruct", True),
        ("13b", True),
        ("13b-instruct", True),
        ("7b-python", False),
        ("13b-python", False),
        ("34b", False),
        ("34b-instruct", False),
        ("70b", False),
        ("embedded", False),
    ],
)
def test_infilling_capability_follows_the_paper(name, infill):
    assert resolve_model(name).supports_infill is infill


def test_chat_format_only_for_instruct_models():
    assert resolve_model("7b-instruct").chat_format == "llama2-inst"
    assert resolve_model("70b-instruct").chat_format == "codellama-70b"
    assert resolve_model("7b").chat_format is None
    assert resolve_model("13b-python").chat_format is None


@pytest.mark.parametrize(
    "name", ["13b-python", "CodeLlama-13b-Python-hf", "codellama/CodeLlama-13b-Python-hf", " 13B-PYTHON "]
)
def test_aliases_repo_ids_and_short_names_resolve_to_the_same_entry(name):
    assert resolve_model(name).repo_id == "codellama/CodeLlama-13b-Python-hf"


def test_nf4_memory_figures_match_published_sizes():
    gb = {name: resolve_model(name).weight_bytes("4bit") / 1e9 for name in ("7b", "13b", "34b")}
    assert 3.3 < gb["7b"] < 4.2
    assert 6.5 < gb["13b"] < 8.0
    assert 17 < gb["34b"] < 20


def test_local_folder_and_hub_ids_resolve_as_custom(tmp_path):
    assert resolve_model(str(tmp_path)).family == "custom"
    assert resolve_model("someone/some-model").repo_id == "someone/some-model"


@pytest.mark.parametrize("bad", ["7b-instrukt", "", "not a model!"])
def test_unknown_model_is_a_clear_error(bad):
    with pytest.raises(UnknownModelError) as info:
        resolve_model(bad)
    assert "%codellama models" in str(info.value) or "No model name" in str(info.value)


def test_unknown_model_suggests_the_close_name():
    with pytest.raises(UnknownModelError, match="7b-instruct"):
        resolve_model("7b-instrukt")
