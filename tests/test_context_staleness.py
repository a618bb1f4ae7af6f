"""Context that knows what ran: stale, never-run and out-of-order cells are marked (and moved)
in the prompt and its preview, from what the kernel recorded; a real kernel shows it end to end."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jupyter_codellama.models import resolve_model
from jupyter_codellama.prompts import NotebookContext, approximate_tokens, build_chat_prompt, build_context
from jupyter_codellama.prompts.notebook_context import CellRun, with_runs
from jupyter_codellama.session import RunLog

NOTICE = "did not run as shown in this kernel: the names they define may not exist"
ORDER = "# The cells are in the order they ran, which is not their order in the notebook."


def code(source: str, count: int | None, cell_id: str | None = None, outputs: list | None = None) -> dict:
    cell = {"cell_type": "code", "source": source, "execution_count": count, "outputs": outputs or []}
    return {**cell, "id": cell_id} if cell_id else cell


def notebook(cells: list[Any], runs: list[CellRun | None], current: int | None = None) -> NotebookContext:
    """The notebook as the comm hands it over: each cell with what the kernel knows of its run."""
    return NotebookContext(cells=with_runs(cells, runs), current=current)


def chat_context(cells: list[dict], runs: list[CellRun | None], current: int | None = None) -> str:
    """The context text of a chat prompt, the way the chat builds it."""
    context = notebook(cells, runs, current)
    source = cells[current]["source"] if current is not None else ""
    allocated = build_context(source, "", context, budget=4000, count_tokens=approximate_tokens, mark_current=True)
    return allocated.prefix + allocated.suffix


LOAD = code("import math\nradius = 2.0", 1)
AREA = code(
    "area = math.pi * radius ** 2", 2, outputs=[{"output_type": "execute_result", "data": {"text/plain": "12.5"}}]
)
REPORT = code("print(f'{area:.1f}')", 3)


# ---------------------------------------------------------------------------------------------
# The prompt: one test per case


def test_in_order_and_unchanged_cells_get_no_mark_and_the_same_context_as_before():
    cells = [LOAD, AREA, REPORT]
    runs = [CellRun("ran", 1), CellRun("ran", 2), CellRun("ran", 3)]
    marked = build_context("", "", notebook(cells, runs), budget=4000, count_tokens=approximate_tokens)
    plain = build_context("", "", NotebookContext(cells=cells), budget=4000, count_tokens=approximate_tokens)
    assert marked == plain
    assert "(" not in "".join(line for line in marked.prefix.splitlines() if line.startswith("# In["))
    assert marked.report.notes == ()


def test_a_cell_edited_since_it_ran_is_marked_and_the_model_is_told_its_names_may_not_exist():
    edited = {**AREA, "source": "area = math.pi * diameter ** 2 / 4"}
    text = chat_context([LOAD, edited, REPORT], [CellRun("ran", 1), CellRun("edited", 2), CellRun("ran", 3)])
    assert "# In[2]:  (edited since it ran)\narea = math.pi * diameter ** 2 / 4\n# Out[2]:\n# 12.5" in text
    assert text.startswith("# Cells marked (edited since it ran)") and NOTICE in text
    assert "# In[1]:\nimport math" in text and "# In[3]:\nprint" in text  # the others are not marked
    assert ORDER not in text


def test_a_cell_that_never_ran_is_marked_and_keeps_its_place():
    draft = code("volume = area * height", None)
    context = notebook(
        [LOAD, AREA, draft, REPORT], [CellRun("ran", 1), CellRun("ran", 2), CellRun("never"), CellRun("ran", 3)]
    )
    ctx = build_context("", "", context, budget=4000, count_tokens=approximate_tokens)
    assert "# Out[2]:\n# 12.5\n\n# In[ ]:  (never run)\nvolume = area * height\n\n# In[3]:" in ctx.prefix
    assert NOTICE in ctx.prefix
    labels = [i.label for i in ctx.report.included]
    assert "cell 3 (never run)" in labels and "cell 4" in labels
    assert any(n.startswith("never run: cell 3") and "may not exist" in n for n in ctx.report.notes)


def test_cells_that_ran_out_of_page_order_are_shown_in_the_order_they_ran_and_it_says_so():
    # The page: the report, then the area, then loading; they ran 1 (load), 2 (area), 3 (report).
    heading = {"cell_type": "markdown", "source": "## Area"}
    cells = [code("print(f'{area:.1f}')", 3), heading, code("area = math.pi * radius ** 2", 2), LOAD]
    text = chat_context(cells, [CellRun("ran", 3), None, CellRun("ran", 2), CellRun("ran", 1)])
    assert ORDER in text
    ran_order = [text.index(s) for s in ("# In[1]:", "# ## Area", "# In[2]:", "# In[3]:")]
    assert ran_order == sorted(ran_order)  # the heading stays with the cell under it
    ctx = build_context(
        "",
        "",
        notebook(cells, [CellRun("ran", 3), None, CellRun("ran", 2), CellRun("ran", 1)]),
        budget=4000,
        count_tokens=approximate_tokens,
    )
    assert "cells shown in the order they ran, not in the notebook's order" in ctx.report.notes
    assert NOTICE not in ctx.prefix  # nothing is stale: only the order is said


def test_the_current_cell_that_did_not_run_comes_last_with_its_mark():
    current = code("print(volume)", None)
    cells = [current, REPORT, AREA, LOAD]  # it sits on top of cells that ran bottom-up
    runs = [CellRun("never"), CellRun("ran", 3), CellRun("ran", 2), CellRun("ran", 1)]
    text = chat_context(cells, runs, current=0)
    assert text.rstrip().endswith("# In[ ]:  (current cell, never run)\nprint(volume)")
    assert text.index("# In[1]:") < text.index("# In[2]:") < text.index("# In[3]:")


def test_a_restarted_kernel_marks_the_cells_of_the_old_one_and_drops_their_counts():
    # Before the restart the page ran 1, 2, 3; the new kernel ran only the first cell (as In[1]).
    cells = [LOAD, AREA, REPORT]
    runs = [CellRun("ran", 1), CellRun("earlier"), CellRun("earlier")]
    ctx = build_context("", "", notebook(cells, runs), budget=4000, count_tokens=approximate_tokens)
    assert "# In[1]:\nimport math" in ctx.prefix
    assert "# In[ ]:  (not run since the kernel started)\narea = math.pi * radius ** 2\n# Output:\n# 12.5" in ctx.prefix
    assert "In[2]" not in ctx.prefix and "Out[2]" not in ctx.prefix  # In[2] is the new kernel's to give
    assert NOTICE in ctx.prefix
    assert any(n.startswith("not run since the kernel started: cell 2, cell 3") for n in ctx.report.notes)


def test_the_marks_reach_a_real_chat_prompt_and_its_preview(codellama_tokenizer):
    from jupyter_codellama.prompts import context_preview

    edited = {**AREA, "source": "area = math.pi * diameter ** 2 / 4"}
    context = notebook(
        [REPORT, edited, LOAD, code("volume = area * h", None)],
        [CellRun("ran", 3), CellRun("edited", 2), CellRun("ran", 1), CellRun("never")],
        current=3,
    )
    prompt = build_chat_prompt(
        codellama_tokenizer,
        resolve_model("7b-instruct"),
        [{"role": "user", "content": "Why does this fail?"}],
        context=context,
    )
    assert "# In[2]:  (edited since it ran)" in prompt.text and NOTICE in prompt.text and ORDER in prompt.text
    assert "# In[ ]:  (current cell, never run)\nvolume = area * h" in prompt.text
    preview = context_preview(prompt)
    assert "cell 2 (edited since it ran)" in [i["label"] for i in preview["included"]]
    assert "cells shown in the order they ran, not in the notebook's order" in preview["notes"]
    assert any(n.startswith("never run: the current cell") for n in preview["notes"])


def test_the_notice_goes_when_the_marked_cells_do_not_fit():
    cells = [code("stale = 1", 1), *[code(f"step_{i} = {i}", i + 2) for i in range(8)]]
    runs = [CellRun("edited", 1)] + [CellRun("ran", i + 2) for i in range(8)]
    context = notebook(cells, runs, current=8)
    roomy = build_context("step_7 = 7", "", context, budget=1000, count_tokens=approximate_tokens)
    assert NOTICE in roomy.prefix
    ctx = build_context("step_7 = 7", "", context, budget=30, count_tokens=approximate_tokens)
    assert "step_6 = 6" in ctx.prefix and "stale = 1" not in ctx.prefix
    assert "cell 1 (edited since it ran)" in [i.label for i in ctx.report.cut]
    assert NOTICE not in ctx.prefix and not any("edited" in n for n in ctx.report.notes)
    assert approximate_tokens(ctx.prefix) + approximate_tokens(ctx.suffix) <= 30


def test_a_mark_travels_with_its_cell_and_a_front_end_cannot_set_one():
    cells = with_runs(
        [LOAD, {**AREA, "source": "area = 0"}, REPORT], [CellRun("ran", 1), CellRun("edited", 2), CellRun("ran", 3)]
    )
    others = [cells[0], cells[1]]  # the comm cuts the asked-about cell out for explain and fix
    ctx = build_context("", "", NotebookContext(cells=others), budget=4000, count_tokens=approximate_tokens)
    assert "# In[2]:  (edited since it ran)\narea = 0" in ctx.prefix
    spoofed = [{**LOAD, "run": {"state": "never"}}, {**AREA, "run": "edited"}]  # what JSON could carry
    ctx = build_context("", "", NotebookContext(cells=spoofed), budget=4000, count_tokens=approximate_tokens)
    assert "(" not in ctx.prefix.split("\n")[0] and "edited" not in ctx.prefix and "never" not in ctx.prefix


states = st.one_of(
    st.none(),
    st.builds(CellRun, st.sampled_from(["never", "earlier"])),
    st.builds(CellRun, st.sampled_from(["ran", "edited"]), st.integers(1, 30)),
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.sampled_from(["code", "code", "markdown"]), st.text("abxyz=+1 \n", max_size=40), states),
        max_size=10,
    ),
    st.data(),
    st.integers(0, 300),
    st.booleans(),
)
def test_marked_and_moved_contexts_always_fit_and_lose_no_cell_that_fits(page, data, budget, use_suffix):
    cells = [{"cell_type": kind, "source": source, "execution_count": None, "outputs": []} for kind, source, _ in page]
    runs = [run if kind == "code" else None for kind, _, run in page]
    current = data.draw(st.one_of(st.none(), st.integers(0, len(cells) - 1))) if cells else None
    context = notebook(cells, runs, current)
    ctx = build_context("x = ", "", context, budget=budget, count_tokens=approximate_tokens, use_suffix=use_suffix)
    assert approximate_tokens(ctx.prefix) + approximate_tokens(ctx.suffix) <= budget
    assert ctx == build_context(
        "x = ", "", context, budget=budget, count_tokens=approximate_tokens, use_suffix=use_suffix
    )
    roomy = build_context("x = ", "", context, budget=100_000, count_tokens=approximate_tokens)
    shown = [i for i, cell in enumerate(cells) if i != current and cell["source"].strip()]
    assert sorted(int(i.label.split()[1]) - 1 for i in roomy.report.included if i.kind == "cell") == shown


# ---------------------------------------------------------------------------------------------
# The kernel's record


class FakeShell:
    """What RunLog reads of IPython: the raw history, In[0] being empty."""

    def __init__(self, *inputs: str) -> None:
        self.history_manager = SimpleNamespace(input_hist_raw=["", *inputs])


def ran(log: RunLog, count: int, cell_id: str | None, store_history: bool = True) -> None:
    info = SimpleNamespace(cell_id=cell_id, store_history=store_history, raw_cell="")
    log.record(SimpleNamespace(info=info, execution_count=count, error_in_exec=None))


def test_the_log_tells_unchanged_edited_never_run_and_another_kernels_cells():
    log = RunLog()
    ran(log, 1, "a")
    ran(log, 2, "b")
    shell = FakeShell("x = 1", "y = x + 1")
    cells = [
        code("x = 1\n", 1, "a"),
        code("y = x + 2", 2, "b"),
        code("z = 3", None, "c"),
        code("w = 4", 7, "d"),
        {"cell_type": "markdown", "source": "# Notes"},
    ]
    assert log.states(cells, shell) == [
        CellRun("ran", 1),
        CellRun("edited", 2),
        CellRun("never"),
        CellRun("earlier"),
        None,
    ]


def test_the_kernels_count_wins_over_the_pages():
    log = RunLog()
    ran(log, 1, "a")
    ran(log, 2, "b")
    ran(log, 3, "a")  # cell a ran again
    shell = FakeShell("x = 1", "y = 2", "x = 10")
    # The page lost a's count (outputs cleared) and shows b with a count from an older kernel.
    assert log.states([code(["x = 1", "0"], None, "a")], shell) == [CellRun("ran", 3)]
    assert log.states([code("y = 2", 5, "b")], shell) == [CellRun("ran", 2)]


def test_after_a_restart_a_count_that_is_another_cells_run_here_is_not_this_cells():
    log = RunLog()  # a new kernel: its first cell ran as In[1]
    ran(log, 1, "new")
    shell = FakeShell("fresh = True")
    old_page = [code("x = 1", 1, "old"), code("y = 2", 2, "older")]
    assert log.states(old_page, shell) == [CellRun("earlier"), CellRun("earlier")]


def test_without_cell_ids_the_count_and_source_decide_and_silent_runs_are_not_recorded():
    log = RunLog()
    ran(log, 1, None)
    ran(log, 2, "x", store_history=False)
    shell = FakeShell("x = 1", "%%codellama\nwrite a loop")
    cells = [code("x = 1", 1), code("x = 2", 1), code("%%codellama\nwrite a loop\n", 2), code("x = 1", True)]
    assert log.states(cells, shell) == [CellRun("ran", 1), CellRun("edited", 1), CellRun("ran", 2), CellRun("never")]


def test_a_cell_sent_as_source_only_is_not_judged_unless_the_kernel_knows_its_id():
    log = RunLog()
    ran(log, 1, "a")
    shell = FakeShell("x = 1")
    sources_only = [{"cell_type": "code", "source": "x = 1"}, {"cell_type": "code", "source": "y = 2"}]
    assert log.states(sources_only, shell) == [None, None]
    assert log.states([{"cell_type": "code", "source": "x = 2", "id": "a"}], shell) == [CellRun("edited", 1)]


def test_a_cell_whose_source_the_history_forgot_is_not_judged():
    log = RunLog()
    ran(log, 1, "a")
    shell = FakeShell("", "y = 2")  # ``%reset in`` blanks the inputs it forgets
    assert log.states([code("x = 1", 1, "a"), code("x = 1", 1)], shell) == [None, None]
    assert log.states([code("y = 3", 2)], shell) == [CellRun("edited", 2)]


def test_the_log_stays_bounded(monkeypatch):
    import jupyter_codellama.session as session

    monkeypatch.setattr(session, "_MAX_RUNS", 3)
    log = RunLog()
    for n in range(1, 8):
        ran(log, n, f"cell{n}")
    assert len(log._cell_of_count) == 3 and len(log._count_of_cell) == 3
    shell = FakeShell(*[f"v = {n}" for n in range(1, 8)])
    assert log.states([code("v = 7", 7, "cell7"), code("v = 1", 1, "cell1")], shell) == [
        CellRun("ran", 7),
        CellRun("ran", 1),
    ]


# ---------------------------------------------------------------------------------------------
# A real kernel, driven as JupyterLab drives it (cell ids with every execution)


def run_cell(kernel, source: str, cell_id: str) -> dict:
    """Run ``source`` as the cell ``cell_id``: JupyterLab sends the id in the request's metadata."""
    content = {
        "code": source,
        "silent": False,
        "store_history": True,
        "user_expressions": {},
        "allow_stdin": False,
        "stop_on_error": True,
    }
    msg = kernel.kc.session.msg("execute_request", content, metadata={"cellId": cell_id})
    kernel.kc.shell_channel.send(msg)
    reply = kernel.cell_reply(msg["header"]["msg_id"])
    assert reply["status"] == "ok", reply
    return reply


def page_cell(source: str, count: int | None, cell_id: str) -> dict:
    """A cell as JupyterLab's ``cell.model.toJSON()`` sends it."""
    return {
        "id": cell_id,
        "cell_type": "code",
        "source": source,
        "metadata": {},
        "execution_count": count,
        "outputs": [],
    }


def preview(kernel, comm_id: str, cells: list[dict], current: int, request_id: str) -> dict:
    kernel.send(
        comm_id,
        {
            "type": "context-preview",
            "request_id": request_id,
            "for": "chat",
            "cells": cells,
            "current": current,
            "messages": [{"role": "user", "content": "What is wrong here?"}],
        },
    )
    reply = kernel.wait_terminal(comm_id, request_id, timeout=120)
    assert reply["type"] == "done", reply
    return reply["preview"]


def open_with_model(kernel) -> str:
    comm_id = kernel.open_comm()
    kernel.send(comm_id, {"type": "load", "request_id": "load", "model": "embedded"})
    assert kernel.wait_terminal(comm_id, "load", timeout=300)["type"] == "done"
    return comm_id


@pytest.fixture(scope="module")
def kernel():
    from jupyter_codellama.testing.kernel_comm import KernelComm

    kernel = KernelComm()
    yield kernel
    kernel.shutdown()


@pytest.mark.slow
def test_a_real_kernel_marks_stale_never_run_and_out_of_order_cells_in_the_preview(kernel):
    counts = {}
    for cell_id, source in (
        ("load", "radius = 2.0"),
        ("area", "area = 3.14 * radius ** 2"),
        ("report", "summary = f'{area:.1f}'"),
    ):
        counts[cell_id] = run_cell(kernel, source, cell_id)["execution_count"]
    comm_id = open_with_model(kernel)
    # The page: the report above the area (they ran the other way round); the area's source
    # edited after it ran; a draft never run; the cell being asked about, never run either.
    cells = [
        page_cell("radius = 2.0", counts["load"], "load"),
        page_cell("summary = f'{area:.1f}'", counts["report"], "report"),
        page_cell("area = 3.14 * radius ** 2 / 2", counts["area"], "area"),
        page_cell("height = 5", None, "draft"),
        page_cell("volume = area * height", None, "asked"),
    ]
    shown = preview(kernel, comm_id, cells, current=4, request_id="p1")
    text = shown["text"]
    assert f"# In[{counts['area']}]:  (edited since it ran)\narea = 3.14 * radius ** 2 / 2" in text
    assert "# In[ ]:  (never run)\nheight = 5" in text
    assert "# In[ ]:  (current cell, never run)\nvolume = area * height" in text
    assert NOTICE in text and ORDER in text
    assert text.index("radius = 2.0") < text.index("area = 3.14") < text.index("summary = ")  # as they ran
    labels = [i["label"] for i in shown["included"]]
    assert "cell 3 (edited since it ran)" in labels and "cell 4 (never run)" in labels and "cell 2" in labels
    assert "cells shown in the order they ran, not in the notebook's order" in shown["notes"]

    # Run the report, then the edited area: nothing is stale, and they ran in page order.
    counts["report"] = run_cell(kernel, cells[1]["source"], "report")["execution_count"]
    counts["area"] = run_cell(kernel, cells[2]["source"], "area")["execution_count"]
    cells[1]["execution_count"], cells[2]["execution_count"] = counts["report"], counts["area"]
    text = preview(kernel, comm_id, cells, current=4, request_id="p2")["text"]
    assert f"# In[{counts['area']}]:\narea = 3.14 * radius ** 2 / 2" in text
    assert "  (edited since it ran)" not in text and ORDER not in text
    assert text.index("summary = ") < text.index("area = 3.14")

    # Inline completion sends sources only (no ids, no counts): nothing is judged, nothing marked.
    sources_only = [{"cell_type": "code", "source": c["source"], "metadata": {}} for c in cells]
    kernel.send(
        comm_id,
        {
            "type": "context-preview",
            "request_id": "p3",
            "for": "complete",
            "prefix": "volume = ",
            "cells": sources_only,
            "current": 4,
        },
    )
    reply = kernel.wait_terminal(comm_id, "p3", timeout=120)
    assert "height = 5" in reply["preview"]["text"] and "never run" not in reply["preview"]["text"]


@pytest.mark.slow
def test_after_a_kernel_restart_the_old_counts_are_marked_as_not_run_here(kernel):
    first = run_cell(kernel, "before_restart = 1", "old")["execution_count"]
    kernel.km.restart_kernel(now=True)
    deadline = time.monotonic() + 60
    while not kernel.alive(timeout=30) and time.monotonic() < deadline:
        time.sleep(0.5)
    kernel.execute("%load_ext jupyter_codellama")
    fresh = 0
    while fresh <= first:  # counts start again: In[first] becomes another cell's run
        source = f"after_restart = {fresh}"
        fresh = run_cell(kernel, source, "new")["execution_count"]
    comm_id = open_with_model(kernel)
    cells = [
        page_cell("before_restart = 1", first, "old"),
        page_cell(source, fresh, "new"),
        page_cell("after_restart + 1", None, "asked"),
    ]
    text = preview(kernel, comm_id, cells, current=2, request_id="p4")["text"]
    assert "# In[ ]:  (not run since the kernel started)\nbefore_restart = 1" in text
    assert f"# In[{fresh}]:\n{source}" in text
