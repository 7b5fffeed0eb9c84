"""Task accuracy under steering: a small arithmetic set with known answers, made offline.

``arithmetic_items`` writes two-number addition and subtraction questions from a seed (no data
to download); ``TaskAccuracy`` asks each under each recipe (greedy, a few tokens) and checks the
reply's answer: the first integer after any echo of the question's expression ("14 + 15 = 29"
answers 29).
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import ClassVar

from ..interventions import Steering
from ..models import Model
from .scorer import Generations, Scorer, mean, model_key

_INT = re.compile(r"-?\d[\d,]*")


@dataclass(frozen=True)
class Item:
    """One question and its integer answer; ``expression`` (e.g. ``"14 + 15"``) is what a reply may echo."""

    question: str
    answer: int
    expression: str = ""


def arithmetic_items(n: int = 24, seed: int = 0, low: int = 2, high: int = 20) -> list[Item]:
    """``n`` questions ``"What is a + b?"`` / ``"What is a - b?"`` (``low <= a, b <= high``, results >= 0)."""
    rng = random.Random(seed)
    items: list[Item] = []
    for _ in range(n):
        a, b = rng.randint(low, high), rng.randint(low, high)
        if rng.random() < 0.5:
            items.append(Item(f"What is {a} + {b}? Reply with the number only.", a + b, f"{a} + {b}"))
        else:
            a, b = max(a, b), min(a, b)
            items.append(Item(f"What is {a} - {b}? Reply with the number only.", a - b, f"{a} - {b}"))
    return items


def first_integer(text: str) -> int | None:
    """The first integer written in ``text`` (commas as thousands separators allowed), or None."""
    match = _INT.search(text)
    if not match:
        return None
    try:
        return int(match.group().replace(",", ""))
    except ValueError:
        return None


def answer_of(text: str, item: Item) -> int | None:
    """The integer a reply gives as its answer: the first one after removing echoes of the expression."""
    if item.expression:
        a, op, b = item.expression.split(" ")
        text = re.sub(rf"(?<!\d){re.escape(a)}\s*[{re.escape(op)}−]\s*{re.escape(b)}(?!\d)", " ", text)
    return first_integer(text)


class TaskAccuracy(Scorer):
    """Share of ``items`` answered correctly under each recipe (greedy, ``max_new_tokens`` tokens)."""

    kind = "utility"
    columns: ClassVar[dict[str, bool | None]] = {"accuracy": True}

    def __init__(self, items: list[Item] | None = None, max_new_tokens: int = 12) -> None:
        super().__init__()
        self.items = list(items) if items is not None else arithmetic_items()
        self.max_new_tokens = max_new_tokens

    def _accuracy(self, texts: list[str]) -> float:
        return mean([answer_of(t, item) == item.answer for t, item in zip(texts, self.items)])

    def score(self, model: Model, recipes: Sequence[Steering | None],
              generations: Generations | None = None) -> dict[str, list[float]]:
        questions = [item.question for item in self.items]
        base = self.cached(("base", model_key(model)), lambda: self._accuracy(
            model.generate(questions, max_new_tokens=self.max_new_tokens).texts))
        steered = [r for r in recipes if r is not None]
        values: Iterator[float] = iter([])
        if steered:
            out = model.generate(questions * len(steered), steering=[r for r in steered for _ in questions],
                                 max_new_tokens=self.max_new_tokens)
            n = len(questions)
            values = iter([self._accuracy(out.texts[i * n:(i + 1) * n]) for i in range(len(steered))])
        return {"accuracy": [base if r is None else next(values) for r in recipes]}
