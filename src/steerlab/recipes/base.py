"""What every method shares: a method fitted once, that builds one recipe per strength.

Strength means different things per method (``alpha`` for addition, an angle in degrees for
rotations, 0/1 for ablation), so each fitted method names its parameter, its default grid and
the strength that leaves the model unchanged (``recipe`` returns None there, which lets a sweep
reuse the unsteered baseline instead of running an identity recipe).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

import torch

from ..directions import Direction
from ..errors import SteerlabError
from ..interventions import Steering

#: A recipe's vectors: a Direction (its vector at each layer), one tensor ``[d]`` for every layer, or
#: ``{layer: tensor}``.
Vectors: TypeAlias = Direction | torch.Tensor | Mapping[int, torch.Tensor]
#: Layers as recipes take them: one index or several.
Layers: TypeAlias = int | Iterable[int]
#: Token positions: ``"all"``, ``"prompt"``, ``"generated"``, ``"last"``, an index or a list of indices.
Positions: TypeAlias = str | int | Sequence[int]


@dataclass
class Fitted:
    """A method fitted on training pairs.

    ``recipe(strength)`` builds its ``Steering`` (None at ``identity``, or where ``build`` returns
    None: the unsteered model);
    ``param`` names what strength means (``"alpha"``, ``"angle_deg"``, ...); ``strengths`` is the
    default grid; ``info`` holds what the fit chose (layers, directions' sources, scores), JSON-able.
    """

    method: str
    param: str
    strengths: tuple[float, ...]
    build: Callable[[float], Steering | None]
    info: dict = field(default_factory=dict)
    identity: float | None = 0.0

    def recipe(self, strength: float) -> Steering | None:
        """The recipe at ``strength`` (None where it is the identity)."""
        try:
            value = float(strength)
        except (TypeError, ValueError):
            raise SteerlabError(f"strength={strength!r} for method {self.method!r} must be a number") from None
        if not math.isfinite(value):
            raise SteerlabError(f"strength={strength!r} for method {self.method!r} must be finite")
        if self.identity is not None and value == self.identity:
            return None
        steering = self.build(value)
        if steering is None:
            return None
        steering.meta.setdefault("method", self.method)
        steering.meta["param"] = self.param
        steering.meta["strength"] = value
        return steering


def stamp(steering: Steering, recipe: str, direction: object = None, **info: object) -> Steering:
    """Record provenance on ``steering.meta``: the recipe's name, its settings and, when given, the
    direction's metadata (model fingerprint, data set name and hash, method)."""
    steering.meta["recipe"] = recipe
    meta = getattr(direction, "meta", None)
    if isinstance(meta, dict):
        if meta.get("model") and "model" not in steering.meta:
            steering.meta["model"] = meta["model"]
        steering.meta["direction"] = {k: meta[k] for k in ("method", "site", "positions", "dataset", "chat")
                                      if k in meta}
    steering.meta.update({k: _plain(v) for k, v in info.items()})
    return steering


def _plain(value: object) -> object:
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return value.item()
    return value


def layer_list(layers: Layers) -> list[int]:
    """``layers`` as a sorted list of ints (an int becomes a list of one)."""
    if isinstance(layers, int):
        return [layers]
    try:
        out = sorted({int(x) for x in layers})
    except (TypeError, ValueError):
        raise SteerlabError(f"layers must be an int or a list of ints, got {layers!r}") from None
    if not out:
        raise SteerlabError("layers is empty; give at least one layer")
    return out
