"""One request shape: typed specs, one prompt builder, and the explain / fix requests of the lab.

The comm's ``explain`` and ``fix`` requests carry the notebook; the kernel words the question
(``prompts.requests``), exactly as ``%codellama explain`` / ``fix`` do.
"""

import pytest

from jupyter_codellama.comm import CommSession
from jupyter_codellama.prompts.requests import (
    ChatRequest,
    ExplainRequest,
    FixRequest,
    InfillRequest,
    TextRequest,
    build,
    explain_question,
    fix_question,
)
from test_comm import Recorder

pytestmark = pytest.mark.slow

SECRET = "Zq8vLx3pRt7wNs2kMm4"
CELLS = [
    {"cell_type": "code", "source": "import pandas as pd\ndf = pd.DataFrame({'a': [1]})", "outputs": []},
    {
        "cell_type": "code",
        "source": "values = [3, 1, 2]\nvalues.sortt()  # key: " + SECRET,
        "outputs": [
            {
                "output_type": "error",
                "ename": "AttributeError",
                "evalue": "'list' object has no attribute 'sortt'",
                "traceback": ["\x1b[0;31mAttributeError\x1b[0m: 'list' object has no attribute 'sortt'"],
            }
        ],
    },
]


@pytest.fixture
def session(embedded_engine):
    sent = Recorder()
    s = CommSession(sent, engine=embedded_engine, namespace=lambda: {"api_token": SECRET})
    s.sent = sent
    yield s
    s.close()


def preview(session, request_id, **fields):
    session.handle({"type": "context-preview", "request_id": request_id, **fields})
    reply = session.sent.wait_for(request_id)
    assert reply["type"] == "done", reply
    return reply["preview"]["text"]


def test_the_lab_sends_explain_and_fix_and_the_kernel_words_them(session):
    explain = preview(session, "p-explain", **{"for": "explain", "cells": CELLS, "current": 1})
    fix = preview(session, "p-fix", **{"for": "fix", "cells": CELLS, "current": 1})
    assert "Explain what this notebook cell (the active cell) does" in explain
    assert "raised an error" in fix and "AttributeError: 'list' object has no attribute 'sortt'" in fix
    for text in (explain, fix):
        assert "values.sortt()" in text and "df = pd.DataFrame" in text  # the cell, and the others as context
        assert text.count("values.sortt()") == 1, "the cell is in the question, not again in the context"
        assert SECRET not in text and "\x1b[" not in text


def test_an_explain_request_streams_an_answer(session):
    session.handle({"type": "explain", "request_id": "e1", "cells": CELLS, "current": 0, "max_new_tokens": 8})
    done = session.sent.wait_for("e1")
    assert done["type"] == "done" and done["generated_tokens"] >= 1, done


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"cells": CELLS}, "current"),
        ({"cells": CELLS[:1], "current": 0}, "no error"),
        ({"cells": CELLS, "current": 1, "messages": [{"role": "user", "content": "hi"}]}, "end with an answer"),
    ],
)
def test_a_fix_without_its_cell_or_error_is_a_clear_bad_request(session, fields, message):
    session.handle({"type": "fix", "request_id": "f1", **fields})
    reply = session.sent.wait_for("f1")
    assert reply["type"] == "error" and reply["code"] == "bad_request" and message in reply["message"]


def test_every_spec_builds_through_the_one_entry_point(embedded_engine):
    def prompts(loaded):
        specs = [
            ChatRequest(messages=[{"role": "user", "content": f"use {SECRET}"}], namespace={"token": SECRET}),
            InfillRequest(prefix="def add(a, b):\n    ", namespace={"token": SECRET}),
            ExplainRequest(source=f"key = '{SECRET}'", label="In[3]", namespace={"token": SECRET}),
            FixRequest(source="1/0", error="ZeroDivisionError: division by zero", label="In[4]"),
            TextRequest(f"x = '{SECRET}'", namespace={"token": SECRET}),
        ]
        return [build(spec, loaded) for spec in specs] + [specs[0](loaded)]

    built = embedded_engine.run_with_model(prompts).wait(timeout=60)
    assert [p.kind for p in built[:5]] == ["chat", "continuation", "chat", "chat", "raw"]
    assert built[-1].ids == built[0].ids, "calling a spec builds it the same way"
    assert all(SECRET not in p.text for p in built)
    assert explain_question("key = '<redacted>'", "In[3]") in built[2].text
    assert fix_question("1/0", "ZeroDivisionError: division by zero", "In[4]") in built[3].text


def test_build_refuses_what_is_not_a_spec(embedded_engine):
    call = embedded_engine.run_with_model(lambda loaded: build({"messages": []}, loaded))
    with pytest.raises(TypeError, match="Not a request spec"):
        call.wait(timeout=60)


def test_a_fix_of_a_cell_edited_since_it_ran_says_so(embedded_engine):
    """The error on the page came from the cell's previous version: the question says so."""
    from jupyter_codellama.prompts.notebook_context import CellRun

    def judge(cells):
        return [{**cell, "run": CellRun("edited", 2)} if i == 1 else cell for i, cell in enumerate(cells)]

    sent = Recorder()
    session = CommSession(sent, engine=embedded_engine, namespace=lambda: {}, judge=judge)
    session.sent = sent
    try:
        fix = preview(session, "p-stale", **{"for": "fix", "cells": CELLS, "current": 1})
        explain = preview(session, "p-fresh", **{"for": "explain", "cells": CELLS, "current": 0})
    finally:
        session.close()
    assert "This notebook cell (the active cell, edited since it ran) raised an error." in fix
    assert "(the active cell) does" in explain
