"""From model text to notebook text: code out of chat answers, clean inline suggestions."""

from __future__ import annotations

import pytest

from jupyter_codellama.prompts import clean_completion, extract_code

# ---------------------------------------------------------------------------------------------
# extract_code


def test_fenced_python_without_the_chatter():
    answer = (
        "Sure! Here is how to load it:\n\n```python\nimport pandas as pd\ndf = pd.read_csv('x.csv')\n```\n\n"
        "Then plot:\n\n```py\ndf.plot()\n```\n\nThis reads the file and plots every column."
    )
    assert extract_code(answer) == "import pandas as pd\ndf = pd.read_csv('x.csv')\n\ndf.plot()"


def test_other_languages_and_output_blocks_are_skipped():
    answer = (
        "Install it:\n```bash\npip install seaborn\n```\nthen\n```\nimport seaborn as sns\n```\n```text\nOut: 3\n```"
    )
    assert extract_code(answer) == "import seaborn as sns"
    assert extract_code("```sql\nSELECT 1\n```") == ""


def test_unterminated_fence_is_kept():  # the answer was cut by max_new_tokens or Stop
    assert extract_code("Here:\n```python\nfor i in range(3):\n    print(i)\n") == "for i in range(3):\n    print(i)"


def test_indented_and_tilde_fences():
    assert extract_code("1. Do this:\n   ```python\n   x = 1\n   y = 2\n   ```") == "x = 1\ny = 2"
    assert extract_code("~~~python\nx = '```'\n~~~") == "x = '```'"


def test_no_fence_drops_prose_around_code():
    assert (
        extract_code("Here you go:\nimport os\nprint(os.getcwd())\nHope this helps!") == "import os\nprint(os.getcwd())"
    )
    assert extract_code("%pip install polars\nimport polars as pl") == "%pip install polars\nimport polars as pl"
    assert extract_code("I am not sure what you mean, could you explain?") == ""


# ---------------------------------------------------------------------------------------------
# clean_completion


@pytest.mark.parametrize(
    ("prefix", "suffix", "completion", "expected"),
    [
        # A block: the body, not the code after it.
        ("def f(x):\n    ", "", "y = x + 1\n    return y\n\nprint(f(2))\n", "y = x + 1\n    return y"),
        ("for i in range(10):\n", "", "    print(i)\n    total += i\nprint(total)", "    print(i)\n    total += i"),
        ("def f(x):", "", "\n    return x\n\ndef g(): pass", "\n    return x"),
        # Top level: statements until two blank lines.
        (
            "import numpy as np\n",
            "",
            "import pandas as pd\nimport matplotlib.pyplot as plt\n\n\ndf = 1",
            "import pandas as pd\nimport matplotlib.pyplot as plt",
        ),
        # else/except continue a block.
        ("", "", "if x:\n    a = 1\nelse:\n    a = 2\nprint(a)", "if x:\n    a = 1\nelse:\n    a = 2"),
        # Mid-statement: finish the statement only.
        ('df.groupby("city").', "", "mean()\ndf.plot()", "mean()"),
        # Brackets spanning lines are one statement.
        ("y = foo(", ")\n", "\n    a,\n    b,\n)", "\n    a,\n    b,"),
        # A docstring just opened: write it and the body.
        (
            'def remove_non_ascii(s: str) -> str:\n    """ ',
            "\n    return result\n",
            'Remove non-ASCII characters."""\n    result = "".join(c for c in s if ord(c) < 128)\n    return result\n',
            'Remove non-ASCII characters."""\n    result = "".join(c for c in s if ord(c) < 128)',
        ),
    ],
)
def test_stops_at_the_end_of_the_block_or_statement(prefix, suffix, completion, expected):
    assert clean_completion(completion, prefix, suffix) == expected


@pytest.mark.parametrize(
    ("prefix", "suffix", "completion", "expected"),
    [
        ("x = foo(", ")\n", "a, b)", "a, b"),  # the suffix already closes it
        ("x = foo(", ")\n", "bar(1))", "bar(1)"),
        ("x = foo(", ")\n", "bar(1)", "bar(1)"),  # this ")" is bar's own: kept
        ("print(", ")", '"hi")', '"hi"'),
        ("x = [1, 2", "]\n", ", 3]", ", 3"),
        ("if ready", ":\n    go()\n", ":", ""),  # nothing left but the suffix itself
        ("def f():\n    ", "\n    return total\n", "total = 0\n    return total", "total = 0"),
    ],
)
def test_drops_text_that_repeats_the_suffix(prefix, suffix, completion, expected):
    assert clean_completion(completion, prefix, suffix) == expected


@pytest.mark.parametrize(
    ("prefix", "suffix", "completion", "expected"),
    [
        ("y = ", "", "foo(1, 2", ""),  # nobody closes it: no suggestion rather than broken code
        ("", "", "y = foo(1, 2)\nz = bar(3,", "y = foo(1, 2)"),
        ("y = ", "", "foo(1))", "foo(1)"),  # a stray closer is cut
        ("y = [", "", "1, 2)]", "1, 2"),  # mismatched closer
        ("s = 'a(", "", "b' + str(x)", "b' + str(x)"),  # brackets in strings do not count
        ("# note (", "", "see docs", "see docs"),  # nor in comments
    ],
)
def test_keeps_brackets_balanced(prefix, suffix, completion, expected):
    assert clean_completion(completion, prefix, suffix) == expected


@pytest.mark.parametrize("completion", ["", "   ", "\n\n  \n", "\t"])
def test_never_returns_whitespace(completion):
    assert clean_completion(completion, "x = 1\n", "") == ""


def test_windows_newlines_and_trailing_space():
    assert clean_completion("a = 1\r\nb = 2   \r\n", "", "") == "a = 1\nb = 2"


def test_a_suggestion_cut_short_keeps_its_unclosed_last_line():
    # Generation hit the time limit mid-expression: the user saw it stream and keeps it.
    cut = "print(math.pi * (2"
    assert clean_completion(cut, "import math\n# area\n", "") == ""
    assert clean_completion(cut, "import math\n# area\n", "", truncated=True) == cut
    # A complete answer is still balanced as before.
    assert clean_completion("f(x))", "y = ", "", truncated=True) == "f(x)"
