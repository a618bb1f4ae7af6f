"""%%codellama and %codellama on a real InteractiveShell with the embedded model."""

import _thread
import threading
import time

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.testing.globalipapp import start_ipython
from IPython.utils.capture import capture_output

from jupyter_codellama.session import get_session

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ip(embedded_engine):
    # start_ipython() gives the shell to its first caller only (test_magics_edit.py may be first).
    shell = start_ipython() or InteractiveShell.instance()
    shell.run_line_magic("load_ext", "jupyter_codellama")
    shell.magics_manager.registry["CodeLlamaMagics"]._engine = embedded_engine
    yield shell
    shell.run_line_magic("unload_ext", "jupyter_codellama")


@pytest.fixture(autouse=True)
def fresh_state(ip):
    get_session().reset()
    get_session().errors.clear()
    ip.rl_next_input = None
    yield


@pytest.fixture
def prompts(ip, embedded_engine, monkeypatch):
    """The prompts the magics hand to the engine, built for the loaded model."""
    seen = []
    real_submit = embedded_engine.submit

    def spy(kind, prompt=None, **kwargs):
        if callable(prompt):
            seen.append(prompt(embedded_engine.loaded))
        return real_submit(kind, prompt, **kwargs)

    monkeypatch.setattr(embedded_engine, "submit", spy)
    return seen


def run(ip, source):
    """Run a cell like a user; return (printed text, result)."""
    with capture_output() as out:
        result = ip.run_cell(source, store_history=True)
    return out.stdout, result


def cell_magic(ip, line, body):
    return ip.run_cell_magic("codellama", line, body)


# -- help and usage errors -------------------------------------------------------------------


def test_help_lists_every_subcommand(ip):
    out, _ = run(ip, "%codellama help")
    for word in (
        "load",
        "status",
        "models",
        "unload",
        "explain",
        "fix",
        "complete",
        "chat",
        "config",
        "reset",
        "--interpolate",
        "--insert",
    ):
        assert word in out


@pytest.mark.parametrize(
    "line, body, match",
    [
        ("--temperature 5", "x", "temperature"),
        ("--insert sideways", "x", "sideways"),
        ("--max-new-tokens 0", "x", "at least 1"),
        ("--context everything", "x", "everything"),
        ("-o 1x", "x", "variable name"),
        ("", "   ", "request in the cell body"),
        ("--bogus", "x", "unrecognized"),
    ],
)
def test_bad_cell_magic_arguments_are_usage_errors(ip, line, body, match):
    with pytest.raises(UsageError, match=match):
        cell_magic(ip, line, body)


@pytest.mark.parametrize(
    "line, match",
    [
        ("bogus", "Unknown subcommand"),
        ("status now", "takes no arguments"),
        ("explain In[x]", "Cannot read cell reference"),
        ("explain In[9999]", "no executed cell"),
        ("load no-such-model-xyz", "Unknown model"),
        ("load embedded --gpu-memory lots", "gpu-memory"),
        ("load --4bit --8bit", "not allowed"),
    ],
)
def test_bad_subcommands_are_usage_errors_and_nothing_breaks(ip, line, match):
    with pytest.raises(UsageError, match=match):
        ip.run_line_magic("codellama", line)
    assert ip.run_cell("1 + 1").result == 2


def test_models_lists_the_catalogue_with_capabilities(ip):
    md = ip.run_line_magic("codellama", "models")
    text = md._repr_markdown_() if hasattr(md, "_repr_markdown_") else md.data
    assert text.count("codellama/CodeLlama-") == 12 and "`embedded`" in text and "≈3.7 GB" in text


def test_status_and_config_show_what_is_in_force(ip):
    ip.run_line_magic("config", "CodeLlama.max_new_tokens = 77")
    assert "77" in ip.run_line_magic("codellama", "config").data
    assert "ready" in ip.run_line_magic("codellama", "status").data
    ip.run_line_magic("config", "CodeLlama.max_new_tokens = 512")


# -- %%codellama ------------------------------------------------------------------------------


def test_cell_magic_streams_the_answer_and_puts_code_in_the_next_cell(ip):
    out, result = run(
        ip,
        "%%codellama --max-new-tokens 80 --temperature 0 -o answer\n"
        "Write a Python function add(a, b) that returns a + b.",
    )
    assert result.success, result.error_in_exec
    assert "stop:" in out and "tok/s" in out
    code = ip.user_ns["answer"]
    assert ip.rl_next_input == code and code.strip()
    assert get_session().history[-2]["content"].startswith("Write a Python function add")


def test_markdown_format_inserts_nothing(ip):
    out, result = run(ip, "%%codellama --format markdown --max-new-tokens 20 -o note\nWhat is a list?")
    assert result.success and ip.rl_next_input is None
    assert ip.user_ns["note"]


def test_notebook_context_shows_live_variables_and_hides_secrets(ip, prompts):
    run(ip, "sales_total = 1234\nservice_api_key = 'sk-live-0123456789'")
    run(ip, "%%codellama --max-new-tokens 4\nprint sales_total")
    text = prompts[-1].text
    assert "sales_total" in text and "1234" in text
    assert "sk-live-0123456789" not in text


def test_context_none_sends_only_the_request(ip, prompts):
    run(ip, "sales_total = 1234")
    run(ip, "%%codellama --context none --max-new-tokens 4\nprint sales_total")
    assert "1234" not in prompts[-1].text


def test_interpolation_is_opt_in_and_leaves_code_braces_alone(ip, prompts):
    run(ip, "n_rows = 42")
    run(ip, "%%codellama --context none --max-new-tokens 4\nuse {n_rows} and {'a': 1}")
    assert "{n_rows}" in prompts[-1].text
    out, _ = run(ip, "%%codellama --interpolate --context none --max-new-tokens 4\nuse {n_rows} and {'a': 1}")
    assert "use 42 and {'a': 1}" in prompts[-1].text and "Substituted {n_rows}" in out


def test_ctrl_c_stops_generation_cleanly_and_inserts_nothing(ip):
    timer = threading.Timer(1.0, _thread.interrupt_main)
    timer.start()
    started = time.perf_counter()
    out, result = run(ip, "%%codellama --max-new-tokens 400\nExplain Python decorators in detail.")
    assert "Generation interrupted" in out
    assert result.error_in_exec is None and ip.rl_next_input is None
    assert time.perf_counter() - started < 20
    assert ip.run_cell("2 + 2").result == 4


def test_ctrl_c_as_the_answer_starts_cancels_it_too(ip, monkeypatch):
    """A Ctrl-C that lands while the answer's display is being set up (the job already runs)."""
    import jupyter_codellama.magics.stream as stream

    def interrupted(_shell):
        raise KeyboardInterrupt

    monkeypatch.setattr(stream, "StreamView", interrupted)
    engine = ip.magics_manager.registry["CodeLlamaMagics"].engine
    out, result = run(ip, "%%codellama --max-new-tokens 2000\nExplain Python decorators in detail.")
    assert "Generation interrupted" in out and result.error_in_exec is None
    deadline = time.monotonic() + 10
    while engine.status()["busy"]:
        assert time.monotonic() < deadline, "the answer kept running after Ctrl-C"
        time.sleep(0.05)


# -- %codellama subcommands -------------------------------------------------------------------


def test_explain_works_on_the_previous_cell(ip, prompts):
    run(ip, "squares = [i * i for i in range(5)]")
    out, result = run(ip, "%codellama explain --max-new-tokens 16")
    assert result.success and "stop:" in out
    assert "squares = [i * i for i in range(5)]" in prompts[-1].text
    assert ip.rl_next_input is None


def test_fix_sends_the_failing_cell_and_its_traceback(ip, prompts):
    run(ip, "def ratio(a, b):\n    return a / b\nratio(1, 0)")
    out, result = run(ip, "%codellama fix --max-new-tokens 48")
    assert result.success, result.error_in_exec
    text = prompts[-1].text
    assert "ZeroDivisionError" in text and "return a / b" in text
    if ip.rl_next_input:  # the corrected code goes into a new cell; it was shown first
        assert ip.rl_next_input.splitlines()[0] in out
    else:
        assert "nothing was inserted" in out


def test_fix_without_an_error_says_so(ip):
    with pytest.raises(UsageError, match="No error to fix"):
        ip.run_line_magic("codellama", "fix")


def test_complete_fills_the_marker_and_keeps_prefix_and_suffix(ip):
    run(ip, "def double(x):\n    <FILL_ME>\n\nprint(double(2))")
    out, result = run(ip, "%codellama complete --max-new-tokens 16")
    assert result.success, result.error_in_exec
    filled = ip.rl_next_input
    assert filled.startswith("def double(x):\n    ") and filled.endswith("\n\nprint(double(2))")
    assert "<FILL_ME>" not in filled


def test_cell_form_of_complete_and_missing_marker(ip):
    cell_magic(ip, "complete --max-new-tokens 8", "total = <FILL_ME>\nprint(total)")
    assert ip.rl_next_input.endswith("\nprint(total)")
    with pytest.raises(UsageError, match="exactly one <FILL_ME>"):
        cell_magic(ip, "complete", "no marker here")


def test_reset_clears_the_conversation(ip):
    get_session().add_exchange("q", "a")
    run(ip, "%codellama reset")
    assert get_session().history == []


def test_load_shows_progress_then_ready(ip):
    out, result = run(ip, "%codellama load embedded")
    assert result.success and "embedded ready" in out


def test_unload_and_load_with_the_codellama_shaped_model(shaped_model_dir):
    from jupyter_codellama.config import CodeLlama
    from jupyter_codellama.engine.engine import Engine
    from jupyter_codellama.magics import CodeLlamaMagics

    shell = start_ipython()
    magics = CodeLlamaMagics(shell, engine=Engine(CodeLlama()))
    try:
        with capture_output() as out:
            magics.codellama(f"load {shaped_model_dir}")
        assert "ready" in out.stdout
        assert magics.engine.status()["supports_infill"] is True
        with capture_output() as out:
            magics.codellama("unload")
        assert magics.engine.status()["state"] == "unloaded" and "unloaded" in out.stdout
    finally:
        magics.engine.shutdown()


# -- the ipywidgets chat ----------------------------------------------------------------------


def test_chat_widget_streams_answers_and_offers_run_and_insert(ip, embedded_engine):
    from jupyter_codellama.widgets import ChatWidget

    chat = ChatWidget(ip, engine=embedded_engine, max_new_tokens=60)
    job = chat.ask("Write a Python function that returns 42.")
    assert chat.send.disabled and not chat.stop.disabled
    job.wait(timeout=120)
    deadline = time.monotonic() + 5
    while chat.send.disabled and time.monotonic() < deadline:
        time.sleep(0.05)
    answer_box = chat.messages.children[-1]
    text_widget, buttons = answer_box.children[0], answer_box.children[1]
    assert "Code Llama" in text_widget.value and len(text_widget.value) > 40
    assert get_session().history[-2]["content"] == "Write a Python function that returns 42."
    run_button, insert_button = buttons.children
    if run_button.layout.display is None:  # the answer held code
        insert_button.click()
        assert ip.rl_next_input


def test_chat_widget_stop_and_new_chat(ip, embedded_engine):
    from jupyter_codellama.widgets import ChatWidget

    chat = ChatWidget(ip, engine=embedded_engine, max_new_tokens=400)
    job = chat.ask("Explain Python generators at length.")
    time.sleep(1.0)
    chat.stop.click()
    assert job.wait(timeout=30).stop_reason == "cancelled"
    chat.clear.click()
    assert chat.messages.children == () and get_session().history == []


def test_preview_shows_the_prompt_with_live_dataframe_columns_and_generates_nothing(ip, prompts):
    pd = pytest.importorskip("pandas")
    ip.user_ns["orders"] = pd.DataFrame({"price": [1.5, 2.0], "city": ["Oslo", "Lima"]})
    ip.user_ns["db_password"] = "hunter2-hunter2"
    md = cell_magic(ip, "--preview", "average price per city in orders")
    text = md.data
    assert "tokens" in text and "average price per city" in text
    assert "price" in text and "float64" in text and "city" in text
    assert "hunter2-hunter2" not in text
    assert ip.rl_next_input is None and get_session().history == []


# -- secrets and previews --------------------------------------------------------------------

KEY = "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z"


def test_explain_and_fix_never_send_a_key_from_the_cell_or_its_traceback(ip, prompts):
    run(ip, f"client = connect_to_the_api('{KEY}')")  # NameError: the traceback shows the line
    run(ip, "%codellama explain --max-new-tokens 4")
    run(ip, "%codellama fix --max-new-tokens 4")
    explain, fix = prompts[-2:]
    assert "connect_to_the_api" in explain.text and "NameError" in fix.text
    for prompt in (explain, fix):
        assert "Ab3dEf6hIj9k" not in prompt.text


def test_namespace_secrets_are_redacted_with_context_cell_or_none(ip, prompts):
    ip.user_ns["api_token"] = "Zq8vLx3pRt7wNs2kMm4"  # as getpass() would put it there: no literal, no shape
    run(ip, "api_token.strip()")  # its Out[n] shows the value
    run(ip, "%%codellama --context cell --max-new-tokens 4\nwhat did the last cell show?")
    run(ip, "%%codellama --context none --max-new-tokens 4\nis Zq8vLx3pRt7wNs2kMm4 a strong token?")
    cell, none = prompts[-2:]
    assert "# Out[" in cell.text and "<redacted>" in cell.text and "<redacted>" in none.text
    assert "Zq8vLx3p" not in cell.text + none.text
    assert "api_token:" not in cell.text  # --context cell: no variable summaries


def test_a_long_output_is_redacted_before_it_is_cut(ip, prompts):
    run(
        ip,
        "class Report:\n    def __repr__(self):\n"
        "        return 'row\\n' * 495 + \"password='Sup3rS3cretPassw0rdValue!AndTheRest'\"\nReport()",
    )
    run(ip, "%%codellama --max-new-tokens 4\nwhat is in the report?")
    assert "# row" in prompts[-1].text and "Sup3r" not in prompts[-1].text


def test_the_chat_widget_redacts_namespace_secrets_from_messages(ip, embedded_engine, prompts):
    from jupyter_codellama.widgets import ChatWidget

    ip.user_ns["api_token"] = "Zq8vLx3pRt7wNs2kMm4"
    ChatWidget(ip, engine=embedded_engine, max_new_tokens=4).ask("is Zq8vLx3pRt7wNs2kMm4 a strong token?").wait(60)
    assert "Zq8vLx3p" not in prompts[-1].text and "is <redacted> a strong token?" in prompts[-1].text


def preview_text(result) -> str:
    assert result.success, result.error_in_exec
    return result.result.data


def test_explain_fix_and_complete_preview_show_exactly_what_is_then_sent(ip, prompts):
    run(ip, "def ratio(a, b):\n    return a / b\nratio(1, 0)")
    explain = preview_text(run(ip, "%codellama explain --preview")[1])
    fix = preview_text(run(ip, "%codellama fix --preview")[1])
    complete = preview_text(run(ip, "%%codellama complete --preview\ntotal = <FILL_ME>\nprint(total)")[1])
    assert prompts == [] and ip.rl_next_input is None  # nothing generated, nothing inserted
    run(ip, "%codellama explain --max-new-tokens 4")
    run(ip, "%codellama fix --max-new-tokens 4")
    run(ip, "%%codellama complete --max-new-tokens 4\ntotal = <FILL_ME>\nprint(total)")
    for shown, sent in zip((explain, fix, complete), prompts, strict=True):
        assert f"~~~~text\n{sent.text}\n~~~~" in shown and f"{sent.num_tokens} tokens" in shown


@pytest.mark.parametrize(
    "source, expected",
    [
        ("%load_ext jupyter_codellama", True),
        ("# comment\n%codellama load embedded", True),
        ("%%codellama\nwrite code", True),
        ("x = 1\n%codellama status", False),
        ("x = 1", False),
        ("# only a comment", False),
    ],
)
def test_assistant_cells_are_told_apart_from_notebook_code(source, expected):
    from jupyter_codellama.session import is_assistant_cell

    assert is_assistant_cell(source) is expected


def test_user_variables_are_what_who_lists(ip):
    from jupyter_codellama.session import user_variables

    ip.run_cell("visible_thing = 5")
    names = user_variables(ip)
    assert "visible_thing" in names and "In" not in names and "get_ipython" not in names
