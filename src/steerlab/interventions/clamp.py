"""Clamping a projection: set ``x·r̂`` to a value, or keep it within ``[min, max]``."""

from __future__ import annotations

import math

import torch

from ..errors import SteerlabError
from ..sites import Site
from .base import (
    MAX_VALUE,
    Intervention,
    Layers,
    Params,
    Positions,
    VectorLike,
    at_layer,
    check_width,
    dot,
    finite,
    numel,
    unit,
)


class Clamp(Intervention):
    """Move ``x`` along unit ``direction`` so its projection equals ``value`` (or lies in ``[min, max]``)."""

    kind = "clamp"
    tensor_args = ("direction",)
    scalar_args = ("value", "min", "max")

    def __init__(self, direction: VectorLike, value: float | None = None, layers: Layers = None,
                 site: str = "resid_post", positions: Positions = "all", min: float | None = None,
                 max: float | None = None):
        super().__init__(layers=layers, site=site, positions=positions)
        # an infinite bound on its own side is no bound (min=-inf, max=+inf); NaN and the other infinities are refused
        given = value is not None or min is not None or max is not None
        min = None if _is(min, -math.inf) else min
        max = None if _is(max, math.inf) else max
        value, min, max = (None if v is None else finite(v, f"Clamp {name}", MAX_VALUE)
                           for name, v in (("value", value), ("min", min), ("max", max)))
        if not given:
            raise SteerlabError("Clamp needs value=, or min= and/or max=")
        if value is not None and (min is not None or max is not None):
            raise SteerlabError("Clamp takes either value= or min=/max=, not both")
        if min is not None and max is not None and min > max:
            raise SteerlabError(f"Clamp min={min} is above max={max}")
        self.direction = self._tensor_arg(direction, "Clamp direction")
        self.value, self.min, self.max = value, min, max

    @property
    def affine(self) -> bool:
        """Setting the projection to one value is affine; clipping it to a range is not."""
        return self.value is not None

    def default_layers(self) -> list[int] | None:
        return sorted(self.direction) if isinstance(self.direction, dict) else None

    def params(self, site: Site, shape: tuple[int, ...]) -> Params:
        r = at_layer(self.direction, site, "Clamp direction").flatten()
        r = unit(check_width(r, numel(shape), site, "Clamp direction"), "Clamp direction")
        lo = self.value if self.value is not None else (-math.inf if self.min is None else self.min)
        hi = self.value if self.value is not None else (math.inf if self.max is None else self.max)
        return {"r": r, "lo": torch.tensor([float(lo)]), "hi": torch.tensor([float(hi)])}

    @classmethod
    def apply(cls, x: torch.Tensor, p: Params, mask: torch.Tensor | None) -> torch.Tensor:
        r = p["r"]
        proj = dot(x, r)
        shift = torch.minimum(torch.maximum(proj, p["lo"]), p["hi"]) - proj
        if mask is not None:
            shift = shift * mask[..., None].to(x.dtype)
        return x + shift * r


def _is(value: object, bound: float) -> bool:
    """Whether ``value`` is the number ``bound`` (an open bound)."""
    try:
        return not isinstance(value, bool) and float(value) == bound  # type: ignore[arg-type]
    except (TypeError, ValueError, RuntimeError):
        return False
