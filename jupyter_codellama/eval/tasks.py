"""LeetCode-style programming tasks with test cases (example_notebooks/05_programming_tasks)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .sandbox import CheckResult, run_tests


@dataclass(frozen=True)
class Task:
    name: str
    entry_point: str
    prompt: str
    cases: tuple[tuple[tuple[Any, ...], Any], ...]

    def check(self, code: str, timeout: float = 10.0) -> CheckResult:
        return run_tests(code, self.entry_point, self.cases, timeout=timeout)


TASKS: tuple[Task, ...] = (
    Task(
        "merge strings alternately",
        "merge_alternately",
        "Write a Python function merge_alternately(word1: str, word2: str) -> str that merges two "
        "strings by adding letters in alternating order, starting with word1. If one string is "
        "longer, append its remaining letters at the end. Example: merge_alternately('abc', 'pqr') "
        "returns 'apbqcr'.",
        ((("abc", "pqr"), "apbqcr"), (("ab", "pqrs"), "apbqrs"), (("abcd", "pq"), "apbqcd"), (("", "x"), "x")),
    ),
    Task(
        "two sum",
        "two_sum",
        "Write a Python function two_sum(nums: list[int], target: int) -> list[int] that returns the "
        "indices [i, j] with i < j of the two numbers in nums that add up to target. Exactly one "
        "answer exists. Example: two_sum([2, 7, 11, 15], 9) returns [0, 1].",
        ((([2, 7, 11, 15], 9), [0, 1]), (([3, 2, 4], 6), [1, 2]), (([3, 3], 6), [0, 1])),
    ),
    Task(
        "valid parentheses",
        "is_valid",
        "Write a Python function is_valid(s: str) -> bool that returns True when every bracket in s "
        "('()', '[]', '{}') is closed by the same type in the right order. Example: is_valid('()[]{}') "
        "is True, is_valid('(]') is False.",
        ((("()[]{}",), True), (("(]",), False), (("([)]",), False), (("{[]}",), True), (("",), True)),
    ),
    Task(
        "reverse words",
        "reverse_words",
        "Write a Python function reverse_words(s: str) -> str that returns the words of s in reverse "
        "order, separated by single spaces, without leading or trailing spaces. Example: "
        "reverse_words('  the sky  is blue ') returns 'blue is sky the'.",
        ((("the sky is blue",), "blue is sky the"), (("  hello world  ",), "world hello"), (("a",), "a")),
    ),
    Task(
        "fizzbuzz",
        "fizzbuzz",
        "Write a Python function fizzbuzz(n: int) -> list[str] that returns the strings for 1..n: "
        "'Fizz' for multiples of 3, 'Buzz' for multiples of 5, 'FizzBuzz' for multiples of both, "
        "else the number as a string. Example: fizzbuzz(5) returns ['1', '2', 'Fizz', '4', 'Buzz'].",
        (
            ((5,), ["1", "2", "Fizz", "4", "Buzz"]),
            ((1,), ["1"]),
            (
                (15,),
                ["1", "2", "Fizz", "4", "Buzz", "Fizz", "7", "8", "Fizz", "Buzz", "11", "Fizz", "13", "14", "FizzBuzz"],
            ),
        ),
    ),
)
