"""Code Llama infilling prompts: exact ids (the model only fills what it was trained to read)."""

from __future__ import annotations

import pytest

from jupyter_codellama.models import resolve_model
from jupyter_codellama.prompts import (
    NotebookContext,
    PromptTooLongError,
    build_infill_prompt,
    context_preview,
    infill_ids,
)

PREFIX = 'def remove_non_ascii(s: str) -> str:\n    """ '
SUFFIX = "\n    return result\n"
# transformers' expectation for CodeLlama-7b (tests/models/code_llama) and Meta's reference.
PSM_IDS = [1, 32007, 822, 3349, 29918, 5464, 29918, 294, 18869, 29898, 29879, 29901, 851, 29897, 1599, 851,
           29901, 13, 1678, 9995, 29871, 32008, 13, 1678, 736, 1121, 13, 32009]  # fmt: skip
# SPM as transformers' CodeLlamaTokenizer(suffix_first=True) and Meta's infilling_prompt_tokens:
# the suffix is encoded *without* the implicit leading space here too.
SPM_IDS = [1, 32007, 32008, 13, 1678, 736, 1121, 13, 32009, 822, 3349, 29918, 5464, 29918, 294, 18869, 29898,
           29879, 29901, 851, 29897, 1599, 851, 29901, 13, 1678, 9995, 29871]  # fmt: skip
PRE, SUF, MID, EOT = 32007, 32008, 32009, 32010


@pytest.fixture(scope="module")
def tok(codellama_tokenizer):
    return codellama_tokenizer


@pytest.fixture(scope="module")
def embedded_tok(embedded_tokenizer):
    return embedded_tokenizer


def test_psm_ids_equal_transformers_reference(tok):
    assert infill_ids(tok, PREFIX, SUFFIX) == PSM_IDS
    assert infill_ids(tok, PREFIX, SUFFIX) == tok(PREFIX, suffix=SUFFIX)["input_ids"]


def test_spm_ids_equal_transformers_suffix_first(tok):
    assert infill_ids(tok, PREFIX, SUFFIX, mode="spm") == SPM_IDS
    assert SPM_IDS == tok(PREFIX, suffix=SUFFIX, suffix_first=True)["input_ids"]


def test_prefix_ending_mid_word(tok):
    ids = infill_ids(tok, "def remove_non_asc", "(s: str) -> str:\n    pass\n")
    assert ids == [1, PRE, 822, 3349, 29918, 5464, 29918, 6151, SUF, 29898, 29879, 29901, 851, 29897, 1599, 851,
                   29901, 13, 1678, 1209, 13, MID]  # fmt: skip
    # "asc" is the last piece, not "▁asc": the model continues the word.
    assert tok.convert_ids_to_tokens([ids[ids.index(SUF) - 1]]) == ["asc"]
    assert ids == tok("def remove_non_asc", suffix="(s: str) -> str:\n    pass\n")["input_ids"]


def test_unicode_prefix_and_suffix(tok):
    prefix, suffix = 'name = "café 東京 ', '🚀"\nprint(name)\n'
    psm = infill_ids(tok, prefix, suffix)
    assert psm == [1, PRE, 1024, 353, 376, 1113, 29888, 29948, 29871, 30591, 30675, 29871, SUF, 243, 162, 157, 131,
                   29908, 13, 2158, 29898, 978, 29897, 13, MID]  # fmt: skip
    assert psm == tok(prefix, suffix=suffix)["input_ids"]
    assert infill_ids(tok, prefix, suffix, mode="spm") == tok(prefix, suffix=suffix, suffix_first=True)["input_ids"]
    assert tok.unk_token_id not in psm


def test_empty_suffix_follows_meta_layout(tok):
    # transformers falls back to plain text for an empty suffix; Meta's layout keeps the markers.
    assert infill_ids(tok, "def f():\n    ", "") == [1, PRE, 822, 285, 7295, 13, 268, SUF, MID]
    assert infill_ids(tok, "def f():\n    ", "", mode="spm") == [1, PRE, SUF, MID, 822, 285, 7295, 13, 268]


def test_control_strings_in_code_stay_text(tok):
    ids = infill_ids(tok, "x = '<FILL_ME> </s> <s>'\n", "y = '▁<EOT>'\n")
    assert 32016 not in ids  # <FILL_ME> is past the model's vocabulary
    assert ids.count(1) == 1 and 2 not in ids and EOT not in ids
    assert [i for i in ids if i >= 32000] == [PRE, SUF, MID]


def test_unknown_mode_is_refused(tok):
    with pytest.raises(ValueError, match="psm"):
        infill_ids(tok, "a", "b", mode="pms")
    with pytest.raises(ValueError, match="psm"):
        build_infill_prompt(tok, resolve_model("7b"), "a", "b", mode="middle")


def test_build_infill_prompt_without_context(tok):
    prompt = build_infill_prompt(tok, resolve_model("7b"), PREFIX, SUFFIX)
    assert prompt.ids == PSM_IDS
    assert prompt.text == f"<s><PRE> {PREFIX} <SUF>{SUFFIX} <MID>"
    assert prompt.kind == "psm"
    assert prompt.stop_token_ids == (EOT, 2)
    spm = build_infill_prompt(tok, resolve_model("13b-instruct"), PREFIX, SUFFIX, mode="spm")
    assert spm.ids == SPM_IDS and spm.text == f"<s><PRE> <SUF>{SUFFIX} <MID> {PREFIX}"


def test_build_infill_prompt_sends_a_newline_for_an_empty_suffix(tok):
    prompt = build_infill_prompt(tok, resolve_model("7b"), "import numpy as ", "")
    assert prompt.ids[-3:] == [SUF, 13, MID]
    assert any("empty suffix" in note for note in prompt.report.notes)


def test_capability_comes_from_the_catalogue(tok, embedded_tok):
    for name in ("34b", "7b-python", "13b-python"):
        prompt = build_infill_prompt(tok, resolve_model(name), "x = ", "\nprint(x)\n")
        assert prompt.kind == "continuation"
        # "<s>", "▁x", "▁=": the trailing space is left to the answer (token healing).
        assert prompt.ids == [1, 921, 353]
        assert prompt.lead == " "
        assert not {PRE, SUF, MID} & set(prompt.ids)
        assert prompt.stop == ("\n# In[",)
    embedded = build_infill_prompt(embedded_tok, resolve_model("embedded"), "x = ", "\nprint(x)\n")
    assert embedded.kind == "continuation"
    assert embedded.ids == embedded_tok.encode("x =", add_special_tokens=False)
    assert embedded.lead == " "
    assert embedded.stop_token_ids == (embedded_tok.eos_token_id,)


def test_notebook_context_goes_around_the_cursor(tok):
    cells = [
        {"cell_type": "code", "source": "import math", "execution_count": 1, "outputs": []},
        {"cell_type": "code", "source": "r = math.", "execution_count": None},
        {"cell_type": "code", "source": "print(r)", "execution_count": None},
    ]
    context = NotebookContext(cells=cells, current=1)
    prompt = build_infill_prompt(tok, resolve_model("7b"), "r = math.", "", context=context)
    prefix = "# In[1]:\nimport math\n\n# In[ ]:\nr = math."
    suffix = "\n\n# In[ ]:\nprint(r)"
    assert prompt.text == f"<s><PRE> {prefix} <SUF>{suffix} <MID>"
    assert prompt.ids == infill_ids(tok, prefix, suffix)


def test_prompt_never_exceeds_the_window(tok):
    cells = [
        {"cell_type": "code", "source": f"x{i} = [{i}] * {i}\nprint(x{i})", "execution_count": i} for i in range(400)
    ]
    cells.append({"cell_type": "code", "source": "total = sum(", "execution_count": None})
    context = NotebookContext(cells=cells, current=len(cells) - 1)
    prompt = build_infill_prompt(
        tok, resolve_model("7b"), "total = sum(", "", context=context, max_new_tokens=64, max_prompt_tokens=300
    )
    assert len(prompt.ids) <= 300
    assert prompt.text.split(" <SUF>")[0].endswith("total = sum(")
    preview = context_preview(prompt)
    assert preview["cut"] and preview["tokens"] == len(prompt.ids)
    assert [i["label"] for i in preview["included"]][:2] == ["current cell, before the cursor", "cell 400"]


def test_window_minus_generation_budget(tok):
    with pytest.raises(PromptTooLongError, match="max_new_tokens"):
        build_infill_prompt(tok, resolve_model("7b"), "x", "", max_new_tokens=16384)
    big = "y = 1\n" * 5000  # ≈ 20k tokens, more than the 16k window
    prompt = build_infill_prompt(tok, resolve_model("7b"), big, "", max_new_tokens=1000)
    assert len(prompt.ids) <= 16384 - 1000
    assert prompt.report.included[0].truncated


def test_tokenizer_reloaded_from_a_folder_gives_the_same_ids(tok, tmp_path):
    """transformers 5 reloads CodeLlamaTokenizer without its "▁" normaliser; prompts must not care."""
    from transformers import AutoTokenizer

    tok.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert type(reloaded).__name__ == "CodeLlamaTokenizer"
    assert infill_ids(reloaded, PREFIX, SUFFIX) == PSM_IDS
    assert infill_ids(reloaded, PREFIX, SUFFIX, mode="spm") == SPM_IDS
    ids = build_infill_prompt(reloaded, resolve_model("7b"), "x = ", "\n").ids
    assert ids == [1, PRE, 921, 353, 29871, SUF, 13, MID]


def test_encoders_do_not_keep_unloaded_tokenizers_alive(tok, tmp_path):
    import gc
    import weakref

    from transformers import AutoTokenizer

    from jupyter_codellama.prompts.encoding import prompt_encoder

    tok.save_pretrained(tmp_path)
    other = AutoTokenizer.from_pretrained(tmp_path)
    assert prompt_encoder(other) is prompt_encoder(other)
    ref = weakref.ref(other)
    del other
    gc.collect()
    assert ref() is None


@pytest.mark.parametrize(
    "text, body, lead",
    [
        ("def f(r):\n    ", "def f(r):", "\n    "),
        ("y = ", "y =", " "),
        ("y = 1\n", "y = 1", "\n"),
        ("a\n\n  ", "a\n", "\n  "),
        ("abc", "abc", ""),
        ("\n   ", "\n   ", ""),  # nothing but whitespace: nothing to heal against
    ],
)
def test_trailing_whitespace_is_left_for_the_answer_to_start_with(text, body, lead):
    from jupyter_codellama.prompts.infill import split_lead

    assert split_lead(text) == (body, lead)
    assert body + lead == text
