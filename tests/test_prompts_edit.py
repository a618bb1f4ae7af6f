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
