"""Reasoning tasks with answers and scorers, from reasoning-gym (procedurally generated, offline).

Each task is a reasoning-gym data set with an easy configuration that a 135M-parameter model can
sometimes solve; answers are extracted from the text and scored with the data set's own scorer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..errors import SteerlabError

#: task name -> easy reasoning-gym configuration
TASKS: dict[str, tuple[str, dict[str, Any]]] = {
    "basic_arithmetic": ("basic_arithmetic", {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1,
                                              "operators": ("+", "-"), "allow_parentheses": False,
                                              "allow_negation": False}),
    "chain_sum": ("chain_sum", {"min_terms": 2, "max_terms": 3, "min_digits": 1, "max_digits": 1}),
    "simple_equations": ("simple_equations", {"min_terms": 2, "max_terms": 2, "min_value": 1, "max_value": 10,
                                              "operators": ("+", "-"), "operators_weights": [0.5, 0.5]}),
    "letter_counting": ("letter_counting", {"min_words": 1, "max_words": 2}),
}
INSTRUCTION = "Think step by step, then finish with 'Answer: ' and the final answer."
_ANSWER = re.compile(r"answer\s*(?:is)?\s*[:=]?\s*\**\s*(-?\d+(?:\.\d+)?)", re.IGNORECASE)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


@dataclass
class Task:
    """Questions of one reasoning-gym task: ``prompts`` for the model and ``score(i, answer)``."""

    name: str
    questions: list[str]
    answers: list[str]
    data: Any
    entries: list[dict[str, Any]]

    @property
    def prompts(self) -> list[str]:
        return [f"{q}\n{INSTRUCTION}" for q in self.questions]

    def score(self, i: int, answer: str | None) -> bool:
        """Whether ``answer`` is right for question ``i`` (the task's own scorer, full credit only)."""
        if answer is None:
            return False
        return float(self.data.score_answer(answer=answer, entry=self.entries[i])) >= 1.0


def extract(text: str) -> str | None:
    """The final answer: the number after the last "Answer:", else the last number in the text."""
    found = _ANSWER.findall(text)
    if found:
        return _normal(found[-1])
    numbers = _NUMBER.findall(text)
    return _normal(numbers[-1]) if numbers else None


def _normal(number: str) -> str:
    if "." in number:
        number = number.rstrip("0").rstrip(".")
    return number or "0"


def load_task(name: str, n: int, seed: int = 0) -> Task:
    """``n`` questions of task ``name`` (one of ``TASKS``) generated with ``seed``."""
    if name not in TASKS:
        raise SteerlabError(f"--task {name!r} is not known; use one of {', '.join(TASKS)}")
    if not isinstance(n, int) or n < 1:
        raise SteerlabError(f"the number of questions must be a positive integer, got {n!r}")
    try:
        import reasoning_gym
    except ImportError:
        raise SteerlabError("reasoning tasks need reasoning-gym: pip install 'steerlab[audit]'") from None
    gym_name, config = TASKS[name]
    data = reasoning_gym.create_dataset(gym_name, size=n, seed=seed, **config)
    entries = [data[i] for i in range(n)]
    return Task(name, [e["question"] for e in entries], [str(e["answer"]) for e in entries], data, entries)
