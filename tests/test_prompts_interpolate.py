"""Opt-in interpolation never breaks code in a request and says what it did."""

from __future__ import annotations

import time

from jupyter_codellama.prompts import interpolate

NAMESPACE = {
    "In": ["", "import pandas as pd", "df = pd.read_csv('x.csv')"],
    "Out": {2: {"rows": 3}},
    "table": "sales",
    "n": 5,
    "api_key": "sk-live-0123456789abcdefghij",
    "big": list(range(1_000_000)),
}


def test_variables_and_history_are_substituted():
    result = interpolate(
        "Explain In[2] for {table}, giving Out[2] and {n} rows. Err[4]?", NAMESPACE, errors={4: "KeyError: 'price'"}
    )
    assert result.text == (
        "Explain df = pd.read_csv('x.csv') for sales, giving {'rows': 3} and 5 rows. KeyError: 'price'?"
    )
    assert [(s.placeholder, s.kind) for s in result.substituted] == [
        ("In[2]", "input"),
        ("{table}", "variable"),
        ("Out[2]", "output"),
        ("{n}", "variable"),
        ("Err[4]", "error"),
    ]
    assert result.left_as_is == ()


def test_code_in_the_request_is_left_alone():
    text = (
        "Why does `{n}` fail in\n```python\nd = {n}\nprint(f'{n}')\n```\n"
        "and f\"{table}\" too, but {table} works? Also {'a': 1}, {x:>3}, {{n}} and {n.real}."
    )
    result = interpolate(text, NAMESPACE)
    assert result.text == text.replace("but {table} works", "but sales works")
    assert [s.placeholder for s in result.substituted] == ["{table}"]


def test_unknown_private_and_secret_names_are_reported_not_filled():
    result = interpolate("{missing} {_hidden} {api_key} In[9] Out[1] Err[1]", {**NAMESPACE, "_hidden": 1})
    assert result.text == "{missing} {_hidden} {api_key} In[9] Out[1] Err[1]"
    assert result.left_as_is == (
        ("{missing}", "no such variable"),
        ("{_hidden}", "private name"),
        ("{api_key}", "withheld by the deny-list"),
        ("In[9]", "no input 9"),
        ("Out[1]", "no output 1"),
        ("Err[1]", "no error recorded for cell 1"),
    )
    assert "sk-live" not in result.summary()
    assert result.summary().startswith("Nothing substituted. Left as is: {missing} (no such variable)")


def test_values_are_bounded_and_redacted():
    namespace = {
        **NAMESPACE,
        "text": "x" * 10_000,
        "config": {"token": "abc", "url": "http://h"},
        "leak": "my key is sk-live-0123456789abcdefghij",
    }
    assert interpolate("{big}", namespace).text == "[0, 1, 2, 3, 4, 5, ...]"
    text = interpolate("{text}", namespace, max_chars=100).text
    assert len(text) == 100 and text.endswith("…")
    assert interpolate("{config}", namespace).text == "{'token': '<redacted>', 'url': 'http://h'}"
    assert interpolate("{leak}", namespace).text == "my key is <redacted>"
    summary = interpolate("{big} {text}", namespace, max_chars=100).summary()
    assert summary == "Substituted {big} (23 chars), {text} (100 chars)."


def test_an_unterminated_f_string_of_backslashes_takes_linear_time():
    start = time.perf_counter()
    result = interpolate('f"' + "\\" * 100_000 + " {n_rows}", {"n_rows": 42})
    assert time.perf_counter() - start < 2.0 and result.text.endswith(" 42")
