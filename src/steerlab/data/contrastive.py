"""ContrastiveSet: paired texts where only the concept differs (positive has it, negative not)."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from ..errors import DataError
from ..io import short_hash


@dataclass
class ContrastiveSet:
    """``positive[i]`` and ``negative[i]`` form pair ``i``; ``name`` and ``hash`` identify the data."""

    positive: list[str]
    negative: list[str]
    name: str = "custom"
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.positive = _strings(self.positive, "positive")
        self.negative = _strings(self.negative, "negative")
        if len(self.positive) != len(self.negative):
            raise DataError(
                f"a contrastive set needs as many positive as negative texts (pairs), got "
                f"{len(self.positive)} and {len(self.negative)}"
            )
        if not self.positive:
            raise DataError(f"contrastive set {self.name!r} is empty")

    def __len__(self) -> int:
        return len(self.positive)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(zip(self.positive, self.negative))

    @property
    def hash(self) -> str:
        """A short hash of the pairs (order matters)."""
        return short_hash(p.encode() + b"\0" + n.encode() + b"\1" for p, n in self)

    def describe(self) -> dict:
        """Name, size and hash, for provenance."""
        return {"name": self.name, "pairs": len(self), "hash": self.hash}

    def subset(self, indices: Iterable[int]) -> ContrastiveSet:
        """The pairs at ``indices``, in that order (same name and a copy of ``meta``)."""
        idx = list(indices)
        return ContrastiveSet([self.positive[i] for i in idx], [self.negative[i] for i in idx], self.name,
                              dict(self.meta))

    def split(self, test: float = 0.25, seed: int = 0) -> tuple[ContrastiveSet, ContrastiveSet]:
        """Shuffle pairs with ``seed`` and split into (train, test); the test part keeps ``test`` of the pairs."""
        if not 0 < test < 1:
            raise DataError(f"test={test} must be between 0 and 1")
        order = list(range(len(self)))
        random.Random(seed).shuffle(order)
        cut = max(1, min(len(order) - 1, round(len(order) * (1 - test))))
        if len(order) < 2:
            raise DataError(f"contrastive set {self.name!r} has {len(self)} pair; splitting needs at least 2")
        train, held = self.subset(order[:cut]), self.subset(order[cut:])
        train.name, held.name = f"{self.name}[train]", f"{self.name}[test]"
        return train, held

    def map(self, fn: Callable[[str], str]) -> ContrastiveSet:
        """Apply ``fn`` to every text (e.g. wrap it in a template)."""
        return ContrastiveSet([fn(t) for t in self.positive], [fn(t) for t in self.negative], self.name,
                              dict(self.meta))


def _strings(values: Iterable[str], what: str) -> list[str]:
    if isinstance(values, str):
        raise DataError(f"{what} must be a list of strings, not one string")
    out = list(values)
    for i, v in enumerate(out):
        if not isinstance(v, str) or not v.strip():
            raise DataError(f"{what}[{i}] must be a non-empty string, got {v!r}")
    return out
