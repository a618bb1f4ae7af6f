"""Live-variable summaries: informative, bounded, and safe to compute on anything."""

from __future__ import annotations

import inspect
import time

import pytest

from jupyter_codellama.prompts.redact import REDACTED, Redactor, is_denied
from jupyter_codellama.prompts.variables import bounded_repr, describe_value, summarize_namespace


class Exploding:
    """An object whose every hook fails: describing it must still work."""

    def __len__(self):
        raise RuntimeError("boom")

    def __repr__(self):
        raise RuntimeError("boom")

    def __getattr__(self, name):
        raise AssertionError(f"instance attribute {name!r} looked up")


class Tensorish:
    __module__ = "torch"
    shape = property(lambda self: (2, 3))
    dtype = property(lambda self: "torch.float16")


def test_scalars_and_containers():
    assert describe_value(5) == "int = 5"
    assert describe_value(2.5) == "float = 2.5"
    assert describe_value(True) == "bool = True"
    assert describe_value(None) == "None"
    assert describe_value("hello") == "str (len 5) = 'hello'"
    assert describe_value({"a": 1}) == "dict (len 1) = {'a': 1}"
    assert describe_value(range(10)) == "range(0, 10)"


def test_big_values_are_bounded_and_fast():
    big = list(range(5_000_000))
    start = time.perf_counter()
    text = describe_value(big)
    assert time.perf_counter() - start < 0.05
    assert text == "list (len 5000000) = [0, 1, 2, 3, 4, 5, ...]"
    assert len(describe_value("x" * 10**6)) < 120
    nested = {"k": [Exploding()] * 3, "s": "y" * 500}
    assert len(bounded_repr(nested, 80)) <= 80


def test_arrays_functions_and_classes():
    assert describe_value(Tensorish()) == "Tensorish shape (2, 3) dtype torch.float16"
    kernel = {"__name__": "__main__"}
    exec(
        compile(
            "class Point:\n    def __init__(self, x: float, y: float = 0.0): ...\n"
            "class Point3(Point):\n    pass\n"
            "norm = lambda p: (p.x ** 2 + p.y ** 2) ** 0.5\n",
            "<cell>",
            "exec",
            dont_inherit=True,
        ),
        kernel,
    )
    assert describe_value(kernel["Point"]) == "class Point, construct as Point(x: float, y: float = 0.0)"
    assert describe_value(kernel["Point3"]).startswith("class Point3(Point), construct as Point3(x: float")
    assert describe_value(kernel["norm"]) == "def <lambda>(p)"
    assert describe_value(time.sleep) == "def sleep(...) (from time) — sleep(seconds)"  # no signature: C code
    assert describe_value(ValueError) == "class ValueError(Exception)"


def test_broken_objects_never_raise_nor_trigger_instance_hooks():
    assert describe_value(Exploding()) == f"{__name__}.Exploding"


def test_namespace_order_and_filters():
    namespace = {
        "In": [],
        "Out": {},
        "_": 1,
        "_i3": "x",
        "__builtins__": {},
        "exit": None,
        "get_ipython": print,
        "time": time,
        "first": 1,
        "api_key": "sk-xxxxxxxxxxxxxxxxxxxxxxxx",
        "second": 2,
        "third": 3,
    }
    summaries, withheld = summarize_namespace(namespace, mentioned={"first"})
    assert [s.name for s in summaries] == ["first", "third", "second"]
    assert summaries[0].line == "first: int = 1"
    assert withheld == ["api_key"]


@pytest.mark.parametrize(
    "name", ["api_key", "OPENAI_API_KEY", "hf_token", "TOKEN", "client_secret", "db_password", "Keyring"]
)
def test_default_deny_list_is_case_insensitive(name):
    assert is_denied(name)


@pytest.mark.parametrize("name", ["df", "model", "X_train", "kernel_size"])
def test_ordinary_names_pass(name):
    assert not is_denied(name)


def test_redactor_catches_values_literals_and_credential_shapes():
    redact = Redactor(namespace={"password": "correct horse battery", "token": "abc"})
    assert redact("login('me', 'correct horse battery')") == f"login('me', '{REDACTED}')"
    assert redact('token = "abc"') == f'token = "{REDACTED}"'  # too short to hunt for, but assigned
    assert redact("print('abc')") == "print('abc')"
    assert redact("key: str = 'v1'") == f"key: str = '{REDACTED}'"
    assert redact("ghp_" + "a" * 36) == REDACTED
    assert redact("AKIAABCDEFGHIJKLMNOP") == REDACTED
    assert redact("KeyError: 'price'") == "KeyError: 'price'"
    assert redact("if secret == 'x': pass") == "if secret == 'x': pass"


class LazyFrame:
    """A modin / pyspark.pandas-like frame: asking for its shape or dtypes runs the whole query."""

    __module__ = "modin.pandas.dataframe"
    queries = 0

    def _run(self):
        LazyFrame.queries += 1
        return (10, 2)

    shape = property(_run)
    dtypes = property(_run)
    dtype = property(_run)
    columns = property(_run)


class LazyArray:
    """A dask-like array defined anywhere else: same rule."""

    shape = property(LazyFrame._run)
    dtype = "float64"


def test_lazy_frames_and_arrays_are_never_asked_for_their_shape():
    LazyFrame.__name__ = LazyFrame.__qualname__ = "DataFrame"
    summaries, _ = summarize_namespace({"big": LazyFrame(), "arr": LazyArray()})
    assert LazyFrame.queries == 0
    assert [s.line for s in summaries] == [
        f"arr: {LazyArray.__module__}.LazyArray",
        "big: modin.pandas.dataframe.DataFrame",
    ]


def test_describing_the_namespace_is_bounded_in_time():
    class SlowSignature(type):
        @property
        def __signature__(cls):
            time.sleep(0.05)
            return inspect.Signature()

    namespace = {f"Model{i}": SlowSignature(f"Model{i}", (), {"__module__": "__main__"}) for i in range(40)}
    start = time.perf_counter()
    summaries, _ = summarize_namespace(namespace, max_seconds=0.2)
    assert time.perf_counter() - start < 0.5  # unbounded, describing them all takes far longer
    assert len(summaries) == 40 and summaries[0].line == "Model39: class Model39, construct as Model39()"
    assert summaries[-1].line == "Model0: class Model0"
