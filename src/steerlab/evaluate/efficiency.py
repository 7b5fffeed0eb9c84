"""Efficiency steering measured like any other method: sweep the strength of the concise-minus-verbose
direction (``sl.reasoning.efficiency``) on held-out reasoning questions, score task accuracy and the
tokens each answer took, and find the accuracy-vs-tokens frontier.

Held-out honesty: the direction comes from questions ``0 .. train``; the sweep asks the next ``test``
questions of the same seeded list, minus any whose text equals a training question.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pandas as pd

from ..errors import SteerlabError
from ..interventions import Steering
from ..models import Model
from ..reasoning.efficiency import STRENGTHS, ContrastTraces, contrast_traces, efficiency_direction, efficiency_method
from ..reasoning.evaluation import paired_difference, wilson
from ..reasoning.tasks import Task, extract, load_task
from .behaviour import Length
from .frontier import frontier
from .scorer import Generations, Scorer
from .sweep import sweep


class ReasoningAccuracy(Scorer):
    """Share of answers the task's own scorer marks right (answer extracted as in the audit), with a
    95% Wilson interval; ``hits`` keeps each recipe's right/wrong per question, in call order."""

    columns: ClassVar[dict[str, bool | None]] = {"accuracy": True, "accuracy_low": None, "accuracy_high": None}

    def __init__(self, task: Task, indices: Sequence[int]):
        super().__init__()
        self.task, self.indices = task, list(indices)
        self.hits: list[list[bool]] = []

    def score(self, model: Model, recipes: Sequence[Steering | None],
              generations: Generations) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {c: [] for c in self.columns}
        for texts in generations.texts:
            if len(texts) != len(self.indices):
                raise SteerlabError(f"{len(texts)} generations for {len(self.indices)} questions")
            right = [self.task.score(i, extract(t)) for i, t in zip(self.indices, texts)]
            self.hits.append(right)
            hits = sum(right)
            low, high = wilson(hits, len(texts))
            out["accuracy"].append(hits / len(texts))
            out["accuracy_low"].append(low)
            out["accuracy_high"].append(high)
        return out


class Truncated(Scorer):
    """Share of answers that hit the token limit (their length understates what they would have taken)."""

    kind: ClassVar[str] = "utility"
    columns: ClassVar[dict[str, bool | None]] = {"truncated": None}

    def __init__(self, max_new_tokens: int):
        super().__init__()
        self.max_new_tokens = max_new_tokens

    def score(self, model: Model, recipes: Sequence[Steering | None],
              generations: Generations) -> dict[str, list[float]]:
        return {"truncated": [sum(len(t) >= self.max_new_tokens for t in toks) / max(1, len(toks))
                              for toks in generations.tokens]}


@dataclass
class Efficiency:
    """The sweep table (one row per strength: ``accuracy``, its interval, ``length`` = mean generated
    tokens), its Pareto frontier (more accuracy, fewer tokens), the direction, the training traces."""

    results: pd.DataFrame
    frontier: pd.DataFrame
    direction: Any
    traces: ContrastTraces
    settings: dict[str, Any] = field(default_factory=dict)


def efficiency_sweep(model: Model, task: str = "basic_arithmetic", train: int = 32, test: int = 48,
                     strengths: Sequence[float] = STRENGTHS, layer: int | None = None, seed: int = 0,
                     max_new_tokens: int = 128, batch_size: int | None = None) -> Efficiency:
    """Build the efficiency direction on ``train`` questions and sweep ``strengths`` at ``layer``
    (default: the middle layer) on ``test`` held-out questions, greedy, ``max_new_tokens`` at most.
    With 0 among ``strengths``, each row also has its accuracy difference to the unsteered model on
    the same questions (``vs_unsteered`` with a 95% paired bootstrap interval)."""
    if not isinstance(test, int) or test < 1:
        raise SteerlabError(f"test must be a positive integer, got {test!r}")
    n_layers = model.bound.n_layers
    layer = n_layers // 2 if layer is None else int(layer)
    if not 0 <= layer < n_layers:
        raise SteerlabError(f"layer {layer} is out of range 0..{n_layers - 1}")
    traces = contrast_traces(model, task, train, seed=seed, max_new_tokens=max_new_tokens)
    direction = efficiency_direction(model, traces, layers=[layer])
    data = load_task(task, train + test, seed)
    seen = set(data.questions[:train])
    indices = [i for i in range(train, train + test) if data.questions[i] not in seen]
    if not indices:
        raise SteerlabError("every test question is also a training question; raise --test")
    prompts = [data.prompts[i] for i in indices]
    method = efficiency_method(direction, layer, strengths)
    grid = [float(x) for x in strengths]
    accuracy = ReasoningAccuracy(data, indices)
    table = sweep(model, method, strengths=strengths, prompts=prompts,
                  scorers=[accuracy, Length(), Truncated(max_new_tokens)], max_new_tokens=max_new_tokens,
                  batch_size=batch_size)
    if 0.0 in grid and len(accuracy.hits) == len(grid):  # paired on the same questions, vs unsteered
        base = accuracy.hits[grid.index(0.0)]
        diffs = [paired_difference(hits, base, seed) for hits in accuracy.hits]
        for k, column in enumerate(("vs_unsteered", "vs_unsteered_low", "vs_unsteered_high")):
            table[column] = [d[k] for d in diffs]
    front = frontier(table, "accuracy", "length", higher_behaviour=True, higher_utility=False)
    settings = {"model": model.name, "task": task, "train": train, "test_questions": len(indices), "layer": layer,
                "strengths": grid, "seed": seed, "max_new_tokens": max_new_tokens,
                "decoding": "greedy", "concise_tokens_train": sum(traces.concise_tokens) / len(traces.concise),
                "verbose_tokens_train": sum(traces.verbose_tokens) / len(traces.verbose)}
    return Efficiency(table, front, direction, traces, settings)


__all__ = ["Efficiency", "ReasoningAccuracy", "Truncated", "efficiency_sweep"]
