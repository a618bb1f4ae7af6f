"""Edit by instruction: the selection, the answer turned back into the cell, the diff."""

import pytest

from jupyter_codellama.prompts.edit import edited_source, fim_parts, split_selection, unified_diff
from jupyter_codellama.prompts.requests import EditRequest

CELL = "import math\n\ndef area(r):\n    return 3.14 * r * r\n\nprint(area(2))\n"
BODY = "    return 3.14 * r * r\n"


def test_only_the_selection_changes_whatever_the_model_writes():
    start = CELL.index(BODY)
    target = split_selection(CELL, (start, start + len(BODY)))
    answer = "Here you go:\n```python\nimport os\nreturn math.pi * r ** 2\n```\nUses math.pi."
    new = edited_source(target, answer, fenced=True)
    assert new.startswith("import math\n\ndef area(r):\n") and new.endswith("\n\nprint(area(2))\n")
    assert "    return math.pi * r ** 2\n" in new  # the block's indentation restored


def test_an_answer_without_code_leaves_the_cell_as_it_was():
    target = split_selection(CELL, None)
    assert edited_source(target, "I would rather not.", fenced=True) == CELL


def test_a_fim_middle_is_taken_as_written_between_prefix_and_suffix():
    start = CELL.index(BODY)
    target = split_selection(CELL, (start, start + len(BODY)))
    prefix, suffix = fim_parts(target, "use math.pi")
    assert prefix.startswith("import math\n\ndef area(r):\n") and "#     return 3.14" not in prefix
    assert "    # return 3.14 * r * r\n    # After (use math.pi):\n" in prefix
    assert suffix == "\nprint(area(2))\n"
    assert edited_source(target, "    return math.pi * r * r", fenced=False) == CELL.replace("3.14", "math.pi")


@pytest.mark.parametrize("selection, message", [((5, 5), "empty"), ((3, 999), "outside"), ((-1, 2), "outside")])
def test_a_bad_selection_is_refused_before_any_work(selection, message):
    with pytest.raises(ValueError, match=message):
        EditRequest(source=CELL, instruction="add type hints", selection=selection)


def test_an_edit_needs_an_instruction():
    with pytest.raises(ValueError, match="instruction"):
        EditRequest(source=CELL, instruction="  ")


def test_the_diff_shows_removed_and_added_lines_and_nothing_when_unchanged():
    diff = unified_diff(CELL, CELL.replace("3.14", "math.pi"), "In[3]")
    assert "-    return 3.14 * r * r\n+    return math.pi * r * r\n" in diff and "In[3] (before)" in diff
    assert unified_diff(CELL, CELL) == ""
    assert "No newline at end of file" in unified_diff("a", "b")


# --- the prompt each kind of Code Llama gets (the real tokenizer, rebuilt offline) -----------------

PRE, SUF, MID, EOT = 32007, 32008, 32009, 32010


def _built(tokenizer, model, instruction=" use math.pi ", **fields):
    from types import SimpleNamespace

    from jupyter_codellama.models import resolve_model
    from jupyter_codellama.prompts.requests import build

    loaded = SimpleNamespace(tokenizer=tokenizer, spec=resolve_model(model))
    return build(EditRequest(source=CELL, instruction=instruction, label="In[3]", **fields), loaded)


def test_code_llama_instruct_gets_the_cell_and_the_instruction_in_its_chat_format(codellama_tokenizer):
    prompt = _built(codellama_tokenizer, "7b-instruct")
    assert prompt.kind == "chat" and prompt.stop_token_ids == (2,)
    assert prompt.text.startswith("<s>[INST] <<SYS>>\n") and prompt.text.endswith(" [/INST]")
    assert (
        "Rewrite this notebook cell (In[3]) as follows: use math.pi\n\n"
        f"```python\n{CELL.rstrip()}\n```\n\nAnswer with the whole rewritten cell"
    ) in prompt.text
    assert prompt.ids == codellama_tokenizer(prompt.text, add_special_tokens=False)["input_ids"]
    assert prompt.ids[:4] == [1, 518, 25580, 29962]  # "<s>" "▁[" "INST" "]"


def test_a_selection_is_asked_with_the_whole_cell_for_reference(codellama_tokenizer):
    start = CELL.index(BODY)
    text = _built(codellama_tokenizer, "7b-instruct", selection=(start, start + len(BODY))).text
    assert f"This is a notebook cell (In[3]):\n\n```python\n{CELL.rstrip()}\n```" in text
    assert f"Rewrite only this part of it as follows: use math.pi\n\n```python\n{BODY.rstrip()}\n```" in text


def test_a_base_model_that_infills_gets_rewrite_the_middle(codellama_tokenizer):
    start = CELL.index(BODY)
    prompt = _built(codellama_tokenizer, "7b", selection=(start, start + len(BODY)))
    assert prompt.kind == "psm" and EOT in prompt.stop_token_ids
    ids = prompt.ids
    assert ids[:2] == [1, PRE] and ids[-1] == MID and ids.count(SUF) == 1
    prefix = codellama_tokenizer.decode(ids[2 : ids.index(SUF)])
    suffix = codellama_tokenizer.decode(ids[ids.index(SUF) + 1 : -1])
    assert prefix.startswith("import math") and prefix.endswith(
        "def area(r):\n    # Before:\n    # return 3.14 * r * r\n    # After (use math.pi):\n"
    )
    assert suffix == "\nprint(area(2))\n", "the code after the selection is the suffix, as it is"


@pytest.mark.parametrize("model", ["7b-instruct", "7b"])
def test_the_instruction_is_redacted_in_both_forms(codellama_tokenizer, model):
    secret = "Zq8vLx3pRt7wNs2kMm4"
    prompt = _built(codellama_tokenizer, model, instruction=f"use the key {secret}", namespace={"api_token": secret})
    assert "use the key" in prompt.text and secret not in prompt.text


def test_only_the_first_code_block_of_an_answer_becomes_the_cell():
    answer = (
        "```python\nimport math\n\ndef area(r):\n    return math.pi * r * r\n```\n\nUsage:\n"
        "```python\nprint(area(3))\n```\n"
    )
    assert edited_source(split_selection(CELL, None), answer, fenced=True) == (
        "import math\n\ndef area(r):\n    return math.pi * r * r\n"
    )
    streaming = "```python\nimport math\n\ndef area(r):\n    return math."
    assert edited_source(split_selection(CELL, None), streaming, fenced=True).endswith("return math.\n")
