"""A linear probe per layer, ``sigmoid(w·h + b)``: the one probe type every part of steerlab reads.

``sl.directions.probe`` fits one and returns it as a ``Direction`` (weights per layer, biases in
``meta["intercept"]``); ``as_probe`` turns such a direction, a ``Probe`` or a ``(weight, bias)``
pair into a ``Probe``, so the analysis tools and ``probe_score`` read probes the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import numpy as np
import torch

from ..errors import SteerlabError
from .direction import Direction


@dataclass
class Probe:
    """A linear probe per layer: ``weights[layer]`` ``[d]`` and ``biases[layer]``; ``layer`` is the one it was fit on.

    At a layer it holds no weights for, the probe of ``layer`` is used (a probe read across depths).
    """

    weights: dict[int, torch.Tensor]
    biases: dict[int, float]
    layer: int
    site: str = "resid_post"
    meta: dict[str, Any] = field(default_factory=dict)

    def at(self, layer: int) -> tuple[torch.Tensor, float]:
        """The (weight, bias) used at ``layer``."""
        key = layer if layer in self.weights else self.layer
        return self.weights[key], self.biases[key]

    def score(self, h: torch.Tensor, layer: int | None = None) -> torch.Tensor:
        """The probe's logit ``w·h + b`` of states ``[..., d]``."""
        w, b = self.at(self.layer if layer is None else layer)
        return h.float() @ w.float() + b

    def prob(self, h: torch.Tensor, layer: int | None = None) -> torch.Tensor:
        """``sigmoid(w·h + b)``: the probe's probability of the positive class."""
        return torch.sigmoid(self.score(h, layer))

    def to_direction(self) -> Direction:
        """The probe as a Direction: weights per layer, biases in ``meta["intercept"]`` (what ``save`` keeps)."""
        meta = {**self.meta, "site": self.site, "layer": self.layer, "intercept": dict(self.biases)}
        meta.setdefault("method", "probe")
        return Direction(self.weights, meta=meta)


#: what ``as_probe`` accepts: a Probe, a Direction (a fitted probe's, or any direction: bias 0)
#: or a ``(weight, bias)`` pair
ProbeLike: TypeAlias = Probe | Direction | tuple[torch.Tensor | np.ndarray | list[float], float]


def _bias(meta: Mapping[str, Any], layer: int) -> float:
    """A layer's bias from direction metadata: ``intercept`` (or ``intercepts``) per layer or one number; else 0."""
    for key in ("intercepts", "intercept"):
        value = meta.get(key)
        if value is None:
            continue
        if isinstance(value, Mapping):
            if layer in value:
                return float(value[layer])
            if str(layer) in value:
                return float(value[str(layer)])
            continue
        return float(value)
    return 0.0


def as_probe(probe: ProbeLike, layer: int | None = None, site: str = "resid_post") -> Probe:
    """Accept a ``Probe``, a ``Direction`` (bias per layer from ``meta["intercept"]``, as ``sl.directions.probe``
    writes it, or one number; else 0) or a ``(weight, bias)`` pair (then ``layer`` names where it was fit)."""
    if isinstance(probe, Probe):
        return probe
    if isinstance(probe, tuple) and len(probe) == 2:
        w = torch.as_tensor(probe[0], dtype=torch.float32).flatten()
        fit = 0 if layer is None else int(layer)
        return Probe({fit: w}, {fit: float(probe[1])}, fit, site, {"method": "given"})
    if hasattr(probe, "layers") and hasattr(probe, "meta"):
        direction: Any = probe
        meta = dict(direction.meta or {})
        weights = {int(k): direction[k].float() for k in direction.layers}
        biases = {k: _bias(meta, k) for k in weights}
        fit = int(layer) if layer is not None else int(meta.get("layer", direction.layers[0]))
        if fit not in weights:
            raise SteerlabError(f"layer={fit} is not held by this direction; it holds layers {direction.layers}")
        return Probe(weights, biases, fit, meta.get("site", site), meta)
    raise SteerlabError(f"probe must be a Probe, a Direction or a (weight, bias) pair, got {type(probe).__name__}")
