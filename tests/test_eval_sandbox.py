"""The checker: right code passes, wrong code fails, runaway code is stopped."""
from jupyter_codellama.eval.tasks import TASKS

MERGE = TASKS[0]

CORRECT = '''
def merge_alternately(word1, word2):
    out = []
    for i in range(max(len(word1), len(word2))):
        if i < len(word1):
            out.append(word1[i])
        if i < len(word2):
            out.append(word2[i])
    return "".join(out)
'''


def test_a_correct_solution_passes_every_case():
    result = MERGE.check(CORRECT)
    assert result.ok and result.passed == result.total == 4


def test_a_wrong_solution_fails_and_says_where():
    result = MERGE.check("def merge_alternately(a, b):\n    return a + b\n")
    assert not result.ok and result.passed < result.total
    assert any(f.get("expected") == "apbqcr" for f in result.failures)


def test_missing_function_and_syntax_errors_are_reported():
    assert "KeyError" in MERGE.check("def other():\n    pass\n").error
    assert "SyntaxError" in MERGE.check("def merge_alternately(:\n").error
    assert MERGE.check("").error == "no code"


def test_an_infinite_loop_is_stopped_at_the_time_limit():
    result = MERGE.check("def merge_alternately(a, b):\n    while True:\n        pass\n", timeout=2)
    assert not result.ok and "timed out" in result.error


def test_network_access_is_refused_inside_the_sandbox():
    code = ("import socket\n"
            "def merge_alternately(a, b):\n"
            "    socket.create_connection(('127.0.0.1', 9))\n"
            "    return 'apbqcr'\n")
    result = MERGE.check(code)
    assert result.passed == 0 and "network access is disabled" in str(result.failures)


def test_every_task_has_a_prompt_and_cases():
    assert TASKS[0].name == "merge strings alternately"
    assert all(t.prompt and t.cases and t.entry_point in t.prompt for t in TASKS)
