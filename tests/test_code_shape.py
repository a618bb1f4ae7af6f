"""The shape of the code, checked as the README's style asks: small named steps, one request path.

Each check prints what it found, so a failure says where to look.
"""

import ast
import pathlib
import re

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "jupyter_codellama"
MAX_FUNCTION_LINES = 60
MAX_CLASS_LINES = 250


def _definitions(kinds):
    rows = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, kinds):
                where = f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}"
                rows.append((node.end_lineno - node.lineno + 1, where))
    return sorted(rows, reverse=True)


def test_no_function_is_longer_than_60_lines():
    longest = _definitions((ast.FunctionDef, ast.AsyncFunctionDef))
    print("longest functions:", *(f"{n:4d}  {where}" for n, where in longest[:5]), sep="\n  ")
    assert longest[0][0] <= MAX_FUNCTION_LINES, longest[:5]


def test_no_class_is_longer_than_250_lines():
    longest = _definitions((ast.ClassDef,))
    print("longest classes:", *(f"{n:4d}  {where}" for n, where in longest[:5]), sep="\n  ")
    assert longest[0][0] <= MAX_CLASS_LINES, longest[:5]


def test_handlers_are_found_through_tables_not_built_names():
    built = re.compile(r"getattr\(\s*self\s*,\s*[\"'][^\"']*[\"']\s*\+")
    found = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if built.search(p.read_text(encoding="utf-8"))]
    assert not found, found


def test_one_place_builds_a_prompt():
    """The chat and infilling builders are called by ``prompts.requests.build`` only."""
    call = re.compile(r"\b(build_chat_prompt|build_infill_prompt)\(")
    allowed = {"prompts/chat.py", "prompts/infill.py", "prompts/requests.py"}
    callers = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if call.search(p.read_text(encoding="utf-8"))}
    assert callers <= allowed, sorted(callers - allowed)


def test_no_type_is_checked_by_its_name():
    by_name = re.compile(r"type\([^)]*\)\.__name__\s*==")
    found = [
        str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if by_name.search(p.read_text(encoding="utf-8"))
    ]
    assert not found, found
