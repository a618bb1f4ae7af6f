"""``%codellama edit In[n] "instruction"`` on a real InteractiveShell: the diff, where the edited
cell goes, the preview and the mistakes. The model's answer is set by the test where its wording
matters (``answer``); one run uses the embedded model as it is."""

import re

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.testing.globalipapp import start_ipython
from IPython.utils.capture import capture_output

from jupyter_codellama.prompts.edit import unified_diff

pytestmark = pytest.mark.slow

# As the history keeps it: without the trailing newline.
CELL = "import math\n\ndef area(r):\n    return 3.14 * r * r\n\nedit_test_ran = True"
EDITED = CELL.replace("3.14", "math.pi")


@pytest.fixture(scope="module")
def ip():
    # start_ipython() gives the shell to its first caller only (another test module may be first).
    shell = start_ipython() or InteractiveShell.instance()
    shell.run_line_magic("load_ext", "jupyter_codellama")
    yield shell
    shell.run_line_magic("unload_ext", "jupyter_codellama")


@pytest.fixture
def engine(ip, embedded_engine):
    ip.magics_manager.registry["CodeLlamaMagics"]._engine = embedded_engine
    ip.rl_next_input = None
    return embedded_engine


@pytest.fixture
def cell(ip, engine):
    """The number of an executed cell holding CELL; the flag it sets is then cleared, so that a
    cell that runs again shows."""
    number = ip.execution_count
    ip.run_cell(CELL, store_history=True)
    del ip.user_ns["edit_test_ran"]
    return number


def answering(engine, monkeypatch, text):
    """The engine answers ``text`` at once; returns the prompts it was asked."""
    from jupyter_codellama.engine.generation import GenerationResult
    from jupyter_codellama.engine.jobs import Job

    asked = []

    def submit(kind, prompt=None, *, on_chunk=None, **options):
        asked.append(prompt(engine.loaded))
        job = Job.of(kind, prompt, **options)
        on_chunk(text)
        job._finish(GenerationResult(text=text, stop_reason="eos", tokens=[1, 2]))
        return job

    monkeypatch.setattr(engine, "submit", submit)
    return asked


def edit(ip, line):
    """Run ``%codellama edit LINE`` as a cell; (printed text, displayed outputs, cell result)."""
    with capture_output() as out:
        result = ip.run_cell(f"%codellama edit {line}", store_history=True)
    return out.stdout, out.outputs, result


def diff_shown(outputs):
    (shown,) = [o for o in outputs if "edited" in o.metadata.get("jupyter_codellama", {})]
    return shown


FENCED = "Here it is:\n```python\nimport math\n\ndef area(r):\n    return math.pi * r * r\n\nedit_test_ran = True\n```"


def test_edit_shows_the_diff_and_puts_the_edited_cell_below_without_running_it(ip, engine, cell, monkeypatch):
    asked = answering(engine, monkeypatch, FENCED)
    # As in a kernel: front ends that render Markdown get it (a terminal shell asks for text only).
    monkeypatch.setattr(ip.display_formatter, "active_types", ["text/plain", "text/markdown"])
    out, outputs, result = edit(ip, f'In[{cell}] "use math.pi"')
    assert result.success, result.error_in_exec
    shown = diff_shown(outputs)
    diff = unified_diff(CELL, EDITED, f"In[{cell}]")
    assert shown.data["text/markdown"] == f"```diff\n{diff}```"
    assert shown.data["text/plain"] == diff.rstrip("\n")  # what a terminal shows
    assert "-    return 3.14 * r * r\n+    return math.pi * r * r\n" in diff
    assert shown.metadata["jupyter_codellama"] == {"edit": cell, "edited": EDITED}
    assert ip.rl_next_input == EDITED and "stop: eos" in out
    assert "edit_test_ran" not in ip.user_ns  # neither the old cell nor the new one ran
    assert "use math.pi" in asked[0].text and "return 3.14 * r * r" in asked[0].text


@pytest.mark.parametrize("where, expected", [("below", [(EDITED, False)]), ("replace", [(EDITED, True)]), ("none", [])])
def test_insert_below_replace_or_none(ip, engine, cell, monkeypatch, where, expected):
    answering(engine, monkeypatch, FENCED)
    inserted = []
    monkeypatch.setattr(ip, "set_next_input", lambda code, replace=False: inserted.append((code, replace)))
    _, outputs, result = edit(ip, f'{cell} "use math.pi" --insert {where}')
    assert result.success and inserted == expected
    assert "+    return math.pi * r * r" in diff_shown(outputs).data["text/plain"]


def test_lines_rewrite_only_those_lines(ip, engine, cell, monkeypatch):
    # The block comes back without the line's indentation: it is put back.
    asked = answering(engine, monkeypatch, "```python\nreturn math.pi * r ** 2\n```\nUses math.pi.")
    _, _, result = edit(ip, f"In[{cell}] use math.pi --lines 4-4")
    assert result.success, result.error_in_exec
    assert ip.rl_next_input == CELL.replace("3.14 * r * r", "math.pi * r ** 2")
    assert "Rewrite only this part" in asked[0].text and "use math.pi" in asked[0].text


def test_an_answer_without_code_inserts_nothing(ip, engine, cell, monkeypatch):
    answering(engine, monkeypatch, "I would rather not.")
    out, outputs, result = edit(ip, f'In[{cell}] "use math.pi"')
    assert result.success and ip.rl_next_input is None
    assert f"leaves In[{cell}] as it was: nothing was inserted" in out
    assert not [o for o in outputs if "edited" in o.metadata.get("jupyter_codellama", {})]


def test_a_base_model_gets_a_rewrite_the_middle_prompt_and_its_middle_is_taken_as_written(
    ip, cell, shaped_engine, monkeypatch
):
    from jupyter_codellama.models import resolve_model

    # The Code Llama-shaped model with its real tokenizer, as the 7B base model (no chat format).
    monkeypatch.setattr(shaped_engine.loaded, "spec", resolve_model("7b"))
    ip.magics_manager.registry["CodeLlamaMagics"]._engine = shaped_engine
    asked = answering(shaped_engine, monkeypatch, "    return math.pi * r * r\n")
    _, outputs, result = edit(ip, f"In[{cell}] 'use math.pi' --lines 4")
    assert result.success, result.error_in_exec
    assert asked[0].kind == "psm" and "# After (use math.pi):" in asked[0].text
    assert ip.rl_next_input == EDITED and "+    return math.pi * r * r" in diff_shown(outputs).data["text/plain"]


def test_preview_shows_the_prompt_then_sends_exactly_it(ip, engine, cell, monkeypatch):
    ip.user_ns["service_token"] = "Zq8vLx3pRt7wNs2kMm4"
    with capture_output():
        result = ip.run_cell(f'%codellama edit In[{cell}] "add type hints" --preview', store_history=True)
    assert result.success, result.error_in_exec
    shown = result.result.data
    assert ip.rl_next_input is None
    assert "add type hints" in shown and "def area(r):" in shown and "Zq8vLx3p" not in shown
    asked = answering(engine, monkeypatch, FENCED)
    edit(ip, f'In[{cell}] "add type hints"')
    assert f"~~~~text\n{asked[0].text}\n~~~~" in shown


@pytest.mark.parametrize(
    "line, match",
    [
        ("", "required: CELL"),
        ("In[9999] 'add type hints'", "no executed cell In\\[9999\\]"),
        ("In[x] 'add type hints'", "Cannot read cell reference"),
        ("{cell}", "needs an instruction.*%codellama edit In\\[n\\]"),
        ("{cell} '   '", "needs an instruction"),
        ("{cell} 'add type hints' --lines x", "--lines needs A-B"),
        ("{cell} 'add type hints' --lines 3-2", "has 6 lines"),
        ("{cell} 'add type hints' --lines 0-2", "has 6 lines"),
        ("{cell} 'add type hints' --lines 2-99", "1 <= A <= B <= 6"),
        ("{cell} 'add type hints' --max-new-tokens 0", "at least 1"),
        ("{cell} 'add type hints' --insert sideways", "sideways"),
    ],
)
def test_mistakes_are_usage_errors_and_nothing_is_sent(ip, engine, cell, monkeypatch, line, match):
    asked = answering(engine, monkeypatch, FENCED)
    _, _, result = edit(ip, line.format(cell=cell))
    assert isinstance(result.error_in_exec, UsageError) and re.search(match, str(result.error_in_exec))
    assert asked == [] and ip.rl_next_input is None
    assert ip.run_cell("1 + 1").result == 2


def test_a_real_edit_with_the_embedded_model(ip, engine, cell):
    out, outputs, result = edit(
        ip, f'In[{cell}] "rename the function area to circle_area" --max-new-tokens 80 --temperature 0'
    )
    assert result.success, result.error_in_exec
    assert "stop:" in out and "tok/s" in out and "edit_test_ran" not in ip.user_ns
    if ip.rl_next_input is None:
        assert "nothing was inserted" in out
    else:  # what was inserted is what the diff shows
        diff = unified_diff(CELL, ip.rl_next_input, f"In[{cell}]")
        assert diff and diff_shown(outputs).data["text/plain"] == diff.rstrip("\n")
