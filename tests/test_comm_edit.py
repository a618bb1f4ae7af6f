"""The comm's ``edit`` request: a cell (or its selection) rewritten by instruction, streamed back
as the cell's whole new source for the front end's diff view; nothing runs, nothing is written."""

import pytest

from jupyter_codellama.comm import CommSession
from jupyter_codellama.prompts.edit import edited_source, split_selection
from test_comm import Recorder

pytestmark = pytest.mark.slow

SECRET = "Zq8vLx3pRt7wNs2kMm4"
CELL = "def area(r):\n    return 3.14 * r * r\n\nprint(area(2))\n"
CELLS = [
    {"cell_type": "code", "source": "import math\nradius = 2.5", "outputs": []},
    {"cell_type": "code", "source": CELL, "outputs": []},
]
BODY = "    return 3.14 * r * r\n"


@pytest.fixture
def session(embedded_engine):
    sent = Recorder()
    s = CommSession(sent, engine=embedded_engine, namespace=lambda: {"radius": 2.5, "api_token": SECRET})
    s.sent = sent
    yield s
    s.close()


def edit(session, request_id, **fields):
    request = {
        "type": "edit",
        "request_id": request_id,
        "cells": CELLS,
        "current": 1,
        "instruction": "use math.pi",
        "max_new_tokens": 48,
        **fields,
    }
    session.handle(request)
    return session.sent.wait_for(request_id, timeout=120)


def test_an_edit_streams_the_cells_new_source_and_ends_with_the_final_one(session):
    done = edit(session, "e1")
    assert done["type"] == "done", done
    assert done["form"] == "chat"  # the embedded model has a chat template and no infilling
    # The kernel turned the answer into the cell, as the prompt layer does.
    assert done["source"] == edited_source(split_selection(CELL, None), done["text"], fenced=True)
    assert done["changed"] is (done["source"] != CELL)
    if not done["changed"]:
        assert done.get("note")
    chunks = [m for m in session.sent.of("e1") if m["type"] == "chunk"]
    assert chunks and "".join(c["text"] for c in chunks) == done["text"]
    streamed = [c["source"] for c in chunks if "source" in c]
    assert len(set(streamed)) == len(streamed), "a chunk carries the source only when it changed"
    assert bool(streamed) is done["changed"], "the first change is shown at once"


def test_an_edit_of_a_selection_keeps_the_text_around_it(session):
    start = CELL.index(BODY)
    done = edit(session, "e2", selection={"start": start, "end": start + len(BODY)})
    assert done["type"] == "done", done
    assert done["source"].startswith("def area(r):\n") and done["source"].endswith("\n\nprint(area(2))\n")
    for chunk in session.sent.of("e2"):
        if "source" in chunk:
            assert chunk["source"].startswith("def area(r):\n") and chunk["source"].endswith("print(area(2))\n")


def test_the_preview_of_an_edit_shows_the_instruction_the_cell_and_its_context_but_no_secret(session):
    session.handle(
        {
            "type": "context-preview",
            "request_id": "p1",
            "for": "edit",
            "cells": CELLS,
            "current": 1,
            "instruction": f"use math.pi, not {SECRET}",
        }
    )
    reply = session.sent.wait_for("p1")
    assert reply["type"] == "done", reply
    text = reply["preview"]["text"]
    assert "Rewrite this notebook cell (the active cell) as follows: use math.pi" in text
    assert "return 3.14 * r * r" in text and "radius = 2.5" in text  # the cell, and the other as context
    assert SECRET not in text


def test_stop_cancels_a_running_edit(session):
    session.handle(
        {
            "type": "edit",
            "request_id": "e3",
            "cells": CELLS,
            "current": 1,
            "instruction": "add a docstring",
            "max_new_tokens": 400,
        }
    )
    session.handle({"type": "cancel", "request_id": "c3", "target_id": "e3"})
    assert session.sent.wait_for("c3")["type"] == "done"
    done = session.sent.wait_for("e3", timeout=120)
    assert done["type"] == "done" and done["stop_reason"] == "cancelled", done


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"instruction": None}, "'instruction' is required"),
        ({"instruction": ""}, "'instruction' must be 1 characters or more"),
        ({"instruction": "   \n"}, "needs an instruction"),
        ({"instruction": "x" * 2001}, "'instruction' must be 2000 characters at most"),
        ({"current": None}, "'current' is required"),
        ({"selection": {"start": 5, "end": 999}}, "outside the cell"),
        ({"selection": {"start": 9, "end": 3}}, "outside the cell"),
        ({"selection": {"start": 4, "end": 4}}, "selection is empty"),
        ({"selection": {"start": -1, "end": 3}}, "'selection.start' is out of range"),
        ({"selection": {"start": 1}}, "'selection.end' is required"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "end with an answer"),
    ],
)
def test_a_bad_edit_request_is_a_clear_bad_request_and_starts_nothing(session, embedded_engine, fields, message):
    request = {
        "type": "edit",
        "request_id": "bad",
        "cells": CELLS,
        "current": 1,
        "instruction": "use math.pi",
        **fields,
    }
    session.handle({k: v for k, v in request.items() if v is not None})
    reply = session.sent.wait_for("bad")
    assert reply["type"] == "error" and reply["code"] == "bad_request", reply
    assert message in reply["message"]
    assert not any(m["type"] == "chunk" for m in session.sent.of("bad"))
    assert embedded_engine.status()["queued"] == 0


@pytest.mark.parametrize("infills, form", [(True, "infill"), (False, "completion")])
def test_a_base_model_rewrites_the_selection_and_the_rest_stays(shaped_engine, monkeypatch, infills, form):
    """The Code Llama-shaped model (real tokenizer, random weights) as a base model, with and
    without infilling: its text is noise, but it is the code that replaces the selection."""
    from dataclasses import replace

    # Its tokenizer has a chat template; Code Llama's base models have none.
    base = replace(shaped_engine.loaded.spec, chat_format=None, supports_infill=infills)
    monkeypatch.setattr(shaped_engine.loaded, "spec", base)
    sent = Recorder()
    session = CommSession(sent, engine=shaped_engine)
    start = CELL.index(BODY)
    session.handle(
        {
            "type": "edit",
            "request_id": "f1",
            "cells": CELLS,
            "current": 1,
            "instruction": "use math.pi",
            "selection": {"start": start, "end": start + len(BODY)},
            "max_new_tokens": 8,
        }
    )
    done = sent.wait_for("f1", timeout=120)
    session.close()
    assert done["type"] == "done" and done["form"] == form, done
    assert "```" not in done["text"]
    middle = done["text"] if done["text"].endswith("\n") else done["text"] + "\n"
    assert done["source"] == CELL[:start] + middle + CELL[start + len(BODY) :]


def test_the_source_is_sent_when_it_changes_and_at_most_every_tenth_of_a_second():
    from jupyter_codellama.comm import _EditProposal
    from jupyter_codellama.prompts.requests import EditRequest

    proposal = _EditProposal(EditRequest(source=CELL, instruction="use math.pi"))
    chunks = [{"type": "chunk", "text": text} for text in ("```python\n", "a = 1\n", "b = 2\n", "c = 3\n")]
    for chunk in chunks:
        proposal.annotate(chunk)
    # No code yet: nothing to show; the first code at once; the rest came within 0.1 s.
    assert ["source" in chunk for chunk in chunks] == [False, True, False, False]
    assert chunks[1]["source"] == "a = 1\n"
    done = {"type": "done", "text": "```python\na = 1\nb = 2\nc = 3\n```", "stop_reason": "eos"}
    proposal.annotate(done)
    assert done["source"] == "a = 1\nb = 2\nc = 3\n" and done["changed"] and done["form"] == "chat"
