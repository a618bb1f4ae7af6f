"""The notebook as context: what goes in, in which order, within the budget, and what never does."""

from __future__ import annotations

import json
import math
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jupyter_codellama.models import resolve_model
from jupyter_codellama.prompts import (
    Cell,
    ContextSettings,
    NotebookContext,
    approximate_tokens,
    build_chat_prompt,
    build_context,
    build_infill_prompt,
)

SECRET = "sk-proj-4f9Qz8LmN2vX7rT1bY6cW3eK"


class _Dtypes(dict):
    """Like pandas' ``df.dtypes`` (a Series): ``.items()`` gives (column, dtype)."""


class FakeDataFrame:
    """Duck-typed stand-in: the venv has no pandas, and the prompt layer must never import it."""

    __module__ = "pandas.core.frame"

    def __init__(self, dtypes: dict[str, str], rows: int) -> None:
        self.dtypes = _Dtypes(dtypes)
        self.columns = list(dtypes)
        self.shape = (rows, len(dtypes))


FakeDataFrame.__name__ = FakeDataFrame.__qualname__ = "DataFrame"

TRACEBACK = [
    "\x1b[0;31m---------------------------------------------------------------------------\x1b[0m",
    "\x1b[0;31mKeyError\x1b[0m                                  Traceback (most recent call last)",
    *[f"File site-packages/pandas/core/frame.py:{i}, in frame_{i}()" for i in range(30)],
    "\x1b[0;31mKeyError\x1b[0m: 'revenue'",
]


def sales_notebook() -> tuple[list[Cell], dict]:
    """A realistic notebook: load data, a secret, a DataFrame, an error, the cell being written."""
    cells: list[Cell] = [
        {"cell_type": "markdown", "source": "# Sales\nWhich city sells most?"},
        {"cell_type": "code", "execution_count": 1, "source": "import pandas as pd\nimport numpy as np", "outputs": []},
        {
            "cell_type": "code",
            "execution_count": 2,
            "source": f'api_key = "{SECRET}"\nprint("using", api_key)',
            "outputs": [{"output_type": "stream", "name": "stdout", "text": f"using {SECRET}\n"}],
        },
        {
            "cell_type": "code",
            "execution_count": 3,
            "source": "df = pd.read_csv('sales.csv')\ndf.head(2)",
            "outputs": [
                {
                    "output_type": "execute_result",
                    "execution_count": 3,
                    "data": {
                        "text/plain": "    city  price  sold\n0  Paris   9.5     3\n1  Lyon    4.0     7",
                        "text/html": "<table>…</table>",
                    },
                }
            ],
        },
        {
            "cell_type": "code",
            "execution_count": 4,
            "source": "df['revenue'].sum()",
            "outputs": [{"output_type": "error", "ename": "KeyError", "evalue": "'revenue'", "traceback": TRACEBACK}],
        },
        {"cell_type": "code", "execution_count": None, "source": "df.groupby('city')['price'].", "outputs": []},
        {"cell_type": "code", "execution_count": None, "source": "plt.show()", "outputs": []},
    ]

    kernel = {"__name__": "__main__"}  # defined the way a notebook cell defines it
    source = 'def top_cities(frame, n: int = 3) -> list:\n    """Cities by units sold."""\n'
    exec(compile(source, "<cell>", "exec", dont_inherit=True), kernel)
    namespace = {
        "In": ["", "import pandas as pd"],
        "Out": {3: "…"},
        "_": None,
        "_i1": "import pandas",
        "_3": None,
        "exit": object(),
        "get_ipython": lambda: None,
        "np": math,
        "_private": 1,
        "api_key": SECRET,
        "df": FakeDataFrame({"city": "object", "price": "float64", "sold": "int64"}, rows=1200),
        "top_cities": kernel["top_cities"],
        "sizes": list(range(100_000)),
    }
    return cells, namespace


def sales_context(**overrides) -> NotebookContext:
    cells, namespace = sales_notebook()
    return NotebookContext(cells=cells, current=5, namespace=namespace, settings=ContextSettings(**overrides))


def everything(ctx) -> str:
    return ctx.prefix + ctx.suffix


def test_dataframe_columns_and_dtypes_reach_the_context():
    ctx = build_context(
        "df.groupby('city')['price'].", "", sales_context(), budget=4000, count_tokens=approximate_tokens
    )
    assert "# df: DataFrame (1200 rows × 3 columns): city object, price float64, sold int64\n" in ctx.prefix
    assert "# top_cities: def top_cities(frame, n: int = 3) -> list — Cities by units sold." in ctx.prefix
    assert "# sizes: list (len 100000) = [0, 1, 2, 3, 4, 5, ...]" in ctx.prefix
    # df is used in the current cell, so it comes first among the variables.
    variables = [i.label for i in ctx.report.included if i.kind == "variable"]
    assert variables == ["df", "sizes", "top_cities"]


def test_real_pandas_dataframe():
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"city": ["Paris", "Lyon"], "price": [9.5, 4.0], "sold": [3, 7]})
    context = NotebookContext(namespace={"df": frame, "s": frame["price"]})
    ctx = build_context("df.", "", context, budget=1000, count_tokens=approximate_tokens)
    city = frame["city"].dtype  # object in pandas 2, str in pandas 3
    assert f"# df: DataFrame (2 rows × 3 columns): city {city}, price float64, sold int64" in ctx.prefix
    assert "# s: Series shape (2,) dtype float64" in ctx.prefix


def test_real_numpy_array():
    np = pytest.importorskip("numpy")
    context = NotebookContext(namespace={"X": np.zeros((1000, 20), dtype=np.float32)})
    ctx = build_context("X.", "", context, budget=1000, count_tokens=approximate_tokens)
    assert "# X: ndarray shape (1000, 20) dtype float32" in ctx.prefix


def test_secrets_never_reach_any_prompt():
    context = sales_context()
    ctx = build_context("df.", "", context, budget=4000, count_tokens=approximate_tokens)
    assert SECRET not in everything(ctx)
    assert 'api_key = "<redacted>"' in ctx.prefix and "# using <redacted>" in ctx.prefix
    assert not any(i.label == "api_key" for i in ctx.report.included)
    assert "withheld by the deny-list: api_key" in ctx.report.notes
    assert SECRET not in json.dumps(ctx.report.to_dict())


def test_secrets_never_reach_real_prompts(tok):
    infill = build_infill_prompt(tok, resolve_model("7b"), "df.groupby('city')['price'].", "", context=sales_context())
    chat = build_chat_prompt(
        tok, resolve_model("7b-instruct"), [{"role": "user", "content": "Fix the error"}], context=sales_context()
    )
    for prompt in (infill, chat):
        assert SECRET not in prompt.text
        assert "4f9Qz8" not in tok.decode(prompt.ids)
        assert "KeyError: 'revenue'" in prompt.text


def test_secret_literals_are_redacted_even_without_a_namespace():
    cells = [
        {
            "cell_type": "code",
            "execution_count": 1,
            "source": (
                'os.environ["OPENAI_API_KEY"] = "abc123def456"\n'
                'client = Client(auth_token="tok-998877")\n'
                'config = {"db_password": "hunter22", "host": "db"}\n'
                'hf = "hf_' + "a" * 30 + '"\n'
                'max_tokens == "keep"  # a comparison, not an assignment'
            ),
        }
    ]
    ctx = build_context("", "", NotebookContext(cells=cells), budget=1000, count_tokens=approximate_tokens)
    for leaked in ("abc123def456", "tok-998877", "hunter22", "hf_aaaa"):
        assert leaked not in ctx.prefix
    assert '"host": "db"' in ctx.prefix and 'max_tokens == "keep"' in ctx.prefix


def test_custom_deny_list_and_variables_off():
    context = sales_context(deny=("df",))
    ctx = build_context("x", "", context, budget=4000, count_tokens=approximate_tokens)
    assert "# df:" not in ctx.prefix and "# top_cities:" in ctx.prefix
    off = build_context("x", "", sales_context(include_variables=False), budget=4000, count_tokens=approximate_tokens)
    assert "Variables in the kernel" not in off.prefix
    assert SECRET not in everything(off)  # the cells still pass through redaction


def test_kernel_internals_modules_and_private_names_are_skipped():
    ctx = build_context("", "", sales_context(), budget=4000, count_tokens=approximate_tokens)
    names = {i.label for i in ctx.report.included + ctx.report.cut if i.kind == "variable"}
    assert names == {"df", "top_cities", "sizes"}


def test_layout_markdown_outputs_and_the_last_traceback():
    ctx = build_context(
        "df.groupby('city')['price'].", "", sales_context(), budget=4000, count_tokens=approximate_tokens
    )
    assert "# # Sales\n# Which city sells most?\n\n# In[1]:\nimport pandas as pd" in ctx.prefix
    assert ctx.prefix.endswith("# In[ ]:\ndf.groupby('city')['price'].")
    assert "# Out[3]:\n#     city  price  sold\n# 0  Paris   9.5     3\n" in ctx.prefix
    # The most recent error keeps its last 12 traceback lines, without terminal colours.
    assert "# In[4]:\ndf['revenue'].sum()\n# Out[4]:\n# …\n# File site-packages/pandas/core/frame.py:19," in ctx.prefix
    assert "frame.py:18," not in ctx.prefix and "\x1b" not in ctx.prefix
    assert ctx.prefix.count("# KeyError: 'revenue'") == 1
    assert ctx.suffix == "\n\n# In[ ]:\nplt.show()"


def test_long_outputs_keep_head_and_tail():
    lines = [f"epoch {i}: loss {1 / (i + 1):.4f}" for i in range(1000)]
    cells = [
        {
            "cell_type": "code",
            "execution_count": 7,
            "source": "train()",
            "outputs": [
                {"output_type": "stream", "name": "stdout", "text": "\n".join(lines)},
                {"output_type": "display_data", "data": {"image/png": "iVBOR..."}},
            ],
        }
    ]
    ctx = build_context("", "", NotebookContext(cells=cells), budget=2000, count_tokens=approximate_tokens)
    assert "# epoch 0: loss 1.0000" in ctx.prefix and "# epoch 999: loss 0.0010" in ctx.prefix
    assert "lines cut) …" in ctx.prefix and "epoch 500:" not in ctx.prefix
    assert "[image/png output]" in ctx.prefix
    assert len(ctx.prefix) < 900


def test_priority_current_then_error_then_near_then_variables_then_far():
    cells = [{"cell_type": "code", "execution_count": i + 1, "source": f"step_{i} = {i}"} for i in range(10)]
    cells[1]["outputs"] = [{"output_type": "error", "ename": "ValueError", "evalue": "bad", "traceback": []}]
    context = NotebookContext(cells=cells, current=6, namespace={"alpha": 1, "beta": 2})
    ctx = build_context("step_6 = ", "6", context, budget=10_000, count_tokens=approximate_tokens)
    order = [i.label for i in ctx.report.included]
    assert order == [
        "current cell, before the cursor",
        "current cell, after the cursor",
        "cell 2",
        "outputs of cell 2",  # the most recent error
        "cell 6",
        "cell 8",
        "cell 5",
        "cell 9",  # nearest, above first
        "beta",
        "alpha",  # newest first
        "cell 4",
        "cell 10",
        "cell 3",
        "cell 1",  # the rest by distance
    ]
    costs = {i.label: i.tokens for i in ctx.report.included}
    tight_budget = sum(costs[label] for label in order[:8])
    tight = build_context("step_6 = ", "6", context, budget=tight_budget, count_tokens=approximate_tokens)
    assert [i.label for i in tight.report.included] == order[:8]
    assert [i.label for i in tight.report.cut] == order[8:]


def test_current_cell_larger_than_the_budget_keeps_the_lines_nearest_the_cursor():
    prefix = "".join(f"line_{i} = {i}\n" for i in range(100)) + "result = line_99 +"
    ctx = build_context(prefix, "", NotebookContext(), budget=50, count_tokens=len)
    assert ctx.prefix == "line_98 = 98\nline_99 = 99\nresult = line_99 +"  # 44 characters
    assert ctx.report.included[0].truncated
    one_line = "x = " + "1 + " * 100
    ctx = build_context(one_line, "", NotebookContext(), budget=10, count_tokens=len)
    assert ctx.prefix == one_line[-10:]


def test_suffix_gets_at_most_half_of_what_is_left():
    suffix = "".join(f"\nafter_{i} = {i}" for i in range(100))
    ctx = build_context("x = ", suffix, NotebookContext(), budget=104, count_tokens=len)
    assert ctx.prefix == "x = "
    assert suffix.startswith(ctx.suffix) and 30 < len(ctx.suffix) <= 50
    assert ctx.report.included[1].truncated


# ---------------------------------------------------------------------------------------------
# Properties over random notebooks

# No letters that could spell a deny-listed name or a credential: redaction never fires here.
ALPHABET = "abcdegijlmnoqruvwz \n()[]{}:=.,'\"#0123456789"
sources = st.text(alphabet=ALPHABET, max_size=120)
outputs = st.one_of(
    st.builds(lambda t: {"output_type": "stream", "name": "stdout", "text": t}, sources),
    st.builds(lambda t: {"output_type": "execute_result", "data": {"text/plain": t}}, sources),
    st.builds(lambda t: {"output_type": "error", "ename": "ValueError", "evalue": t, "traceback": [t, t]}, sources),
)
cells = st.fixed_dictionaries(
    {
        "cell_type": st.sampled_from(["code", "code", "markdown"]),
        "source": sources,
        "execution_count": st.one_of(st.none(), st.integers(1, 40)),
        "outputs": st.lists(outputs, max_size=2),
    }
)
namespaces = st.one_of(
    st.none(),
    st.dictionaries(
        st.from_regex(r"[abcdegijlmnoqruvwz]{1,6}", fullmatch=True),
        st.one_of(st.integers(), st.text(ALPHABET, max_size=30), st.lists(st.integers(), max_size=40)),
        max_size=6,
    ),
)


def _words(text: str) -> int:
    """A deliberately non-additive, non-monotonic counter (whitespace costs nothing)."""
    return len(text.split()) + text.count("\n")


COUNTERS = {"chars": len, "approximate": approximate_tokens, "words": _words}


@st.composite
def notebooks(draw):
    notebook = draw(st.lists(cells, max_size=12))
    current = draw(st.one_of(st.none(), st.integers(0, len(notebook) - 1))) if notebook else None
    source = notebook[current]["source"] if current is not None else draw(sources)
    cursor = draw(st.integers(0, len(source)))
    context = NotebookContext(
        cells=notebook,
        current=current,
        namespace=draw(namespaces),
        settings=ContextSettings(near_cells=draw(st.integers(0, 3))),
    )
    return context, source[:cursor], source[cursor:]


def _reference_tail(text: str, budget: int) -> str:
    """The longest tail that fits, from a line start, else from inside the last line (chars)."""
    starts = [0] + [i + 1 for i, ch in enumerate(text) if ch == "\n" and i + 1 < len(text)]
    for start in starts:
        if len(text) - start <= budget:
            return text[start:]
    return text[len(text) - budget :] if budget > 0 else ""


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(notebooks(), st.integers(0, 400), st.sampled_from(sorted(COUNTERS)), st.booleans())
def test_context_always_fits_keeps_the_cursor_and_is_deterministic(notebook, budget, counter_name, use_suffix):
    context, prefix, suffix = notebook
    count = COUNTERS[counter_name]
    ctx = build_context(prefix, suffix, context, budget=budget, count_tokens=count, use_suffix=use_suffix)

    assert count(ctx.prefix) + count(ctx.suffix) <= budget
    assert ctx == build_context(prefix, suffix, context, budget=budget, count_tokens=count, use_suffix=use_suffix)

    current = ctx.report.included[0]
    if not current.truncated:
        assert ctx.prefix.endswith(prefix)
    elif counter_name == "chars":  # exact counts: the kept tail is the longest that fits
        assert ctx.prefix.endswith(_reference_tail(prefix, budget))
    if prefix and count(prefix[-1]) <= budget:
        assert ctx.prefix[-1:] == prefix[-1:]

    if use_suffix and suffix and not ctx.report.included[1].truncated:
        assert ctx.suffix.startswith(suffix)
    if not use_suffix:
        assert ctx.suffix == ""

    labels = [i.label for i in ctx.report.included]
    assert len(labels) == len(set(labels))
    assert not set(labels) & {i.label for i in ctx.report.cut if i.kind != "variable"}
    for label in labels:
        if label.startswith("outputs of cell "):
            n = int(label.rsplit(" ", 1)[1])
            assert n - 1 == context.current or any(lb.startswith(f"cell {n}") for lb in labels)


@pytest.fixture(scope="module")
def tok(codellama_tokenizer):
    return codellama_tokenizer


@pytest.fixture(scope="module")
def encoder(tok):
    from jupyter_codellama.prompts.encoding import prompt_encoder

    return prompt_encoder(tok)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(notebook=notebooks(), budget=st.integers(8, 300))
def test_context_fits_with_the_real_code_llama_tokenizer(encoder, notebook, budget):
    context, prefix, suffix = notebook
    ctx = build_context(prefix, suffix, context, budget=budget, count_tokens=encoder.count)
    assert encoder.count(ctx.prefix) + encoder.count(ctx.suffix) <= budget
    assert ctx.prefix.endswith(prefix) or ctx.report.included[0].truncated


HUGE_CELL = "".join(f"value_{i} = compute({i}, scale=2.5)  # step {i}\n" for i in range(30_000))


def test_a_huge_cell_costs_what_its_budget_costs_not_what_its_size_costs():
    counted: list[int] = []

    def count(text: str) -> int:
        counted.append(len(text))
        return approximate_tokens(text)

    ctx = build_context(HUGE_CELL, HUGE_CELL, NotebookContext(), budget=2000, count_tokens=count)
    assert ctx.prefix.endswith("# step 29999\n") and HUGE_CELL.startswith(ctx.suffix)
    assert ctx.report.used <= 2000 and ctx.report.included[0].truncated
    assert sum(counted) < len(HUGE_CELL) // 4  # the whole cell was counted many times over before


def test_a_completion_in_a_huge_cell_is_built_quickly(tok):
    build_infill_prompt(tok, resolve_model("7b"), "x = ", "", max_new_tokens=64)  # the encoder is built once
    start = time.perf_counter()
    prompt = build_infill_prompt(tok, resolve_model("7b"), HUGE_CELL + "total = ", "\n" + HUGE_CELL, max_new_tokens=64)
    assert time.perf_counter() - start < 1.5 and prompt.num_tokens <= prompt.window - 64


def test_approximate_counter_is_cheap_and_sane():
    assert approximate_tokens("") == 0
    assert approximate_tokens("abcd") == 1 and approximate_tokens("abcde") == 2
    assert approximate_tokens("x" * 4000) == math.ceil(4000 / 4)
