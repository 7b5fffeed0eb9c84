"""The scorer protocol: one number (or a few named numbers) per recipe of a sweep.

A sweep hands every scorer the recipes of one method (``None`` = the unsteered model) and the
generations made with them (``Generations``). Scorers that need the model run it themselves with
one recipe per row, and keep what does not depend on the recipe (the unsteered baseline, reference
distributions) in ``self.cache``, so it is computed once per model however many methods are swept.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from ..interventions import Steering
from ..models import Model

T = TypeVar("T")


@dataclass
class Generations:
    """Greedy generations of one sweep: ``texts[i][j]`` / ``tokens[i][j]`` for recipe ``i``, prompt ``j``."""

    prompts: list[str]
    texts: list[list[str]]
    tokens: list[list[list[int]]] = field(default_factory=list)


class Scorer:
    """Base class. ``columns`` maps each output column to True when higher is better (False when lower
    is, None for a column that is not a metric, e.g. a standard error); ``kind`` is ``"behaviour"`` or
    ``"utility"``. Subclasses implement ``score``."""

    kind: ClassVar[str] = "behaviour"
    columns: ClassVar[dict[str, bool | None]] = {}

    def __init__(self) -> None:
        self.cache: dict[Hashable, Any] = {}

    def score(self, model: Model, recipes: Sequence[Steering | None],
              generations: Generations) -> dict[str, list[float]]:
        """One value per recipe for each of ``columns``."""
        raise NotImplementedError

    def cached(self, key: Hashable, compute: Callable[[], T]) -> T:
        """``self.cache[key]``, computing it once."""
        if key not in self.cache:
            self.cache[key] = compute()
        return self.cache[key]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(self.columns)})"


def model_key(model: Model) -> str:
    """What identifies a model for caching (name and shape hash)."""
    fp = getattr(model, "fingerprint", {}) or {}
    return f"{fp.get('name')}:{fp.get('shape_hash')}:{id(model)}"


def mean(values: Iterable[float | None]) -> float:
    """Mean of the finite values (NaN when there are none)."""
    import math

    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return sum(vals) / len(vals) if vals else float("nan")


def standard_error(values: Iterable[float | None]) -> float:
    """Sample standard deviation / sqrt(n) of the finite values (NaN for fewer than two)."""
    import math

    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if len(vals) < 2:
        return float("nan")
    m = sum(vals) / len(vals)
    return math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1) / len(vals))
