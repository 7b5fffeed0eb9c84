"""Patching (a do-intervention): set the activation to given values, or only its part along a direction.

``Patch(value, positions=[3, 7])`` with ``value`` of shape ``[2, d]`` writes row ``k`` at the ``k``-th
listed position; a ``value`` of shape ``[d]`` is written at every selected position. With
``direction=v`` only the component along unit ``v`` is replaced, ``x + ((value − x)·v̂) v̂`` (a subspace
patch: the interchange intervention on a distributed representation of Geiger et al.).
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import ShapeError, SteerlabError
from ..sites import Site
from .base import Intervention, Layers, Params, Positions, Static, VectorLike, at_layer, check_width, dot, numel, unit
from .positions import StepContext


class Patch(Intervention):
    """Replace activations at the selected positions with ``value`` (per layer if a dict/Direction)."""

    kind = "patch"
    needs_context = True
    tensor_args = ("value", "direction")

    def __init__(self, value: VectorLike, layers: Layers = None, site: str = "resid_post", positions: Positions = "all",
                 direction: VectorLike | None = None):
        super().__init__(layers=layers, site=site, positions=positions)
        self.value = self._tensor_arg(value, "Patch value")
        self.direction = None if direction is None else self._tensor_arg(direction, "Patch direction")
        sample = next(iter(self.value.values())) if isinstance(self.value, dict) else self.value
        self._rows = 1 if sample.dim() == 1 else int(sample.shape[0])
        if self._rows > 1 and (isinstance(self.positions, str) or len(self.positions) != self._rows):
            raise SteerlabError(
                f"Patch value has {self._rows} rows, so positions must list {self._rows} indices, got {self.positions!r}"
            )

    @property
    def affine(self) -> bool:
        """Writing fixed values (or a fixed component along a direction) is affine."""
        return True

    def default_layers(self) -> list[int] | None:
        return sorted(self.value) if isinstance(self.value, dict) else None

    def params(self, site: Site, shape: tuple[int, ...]) -> Params:
        width = numel(shape)
        value = at_layer(self.value, site, "Patch value").float()
        if value.dim() > 1 and tuple(value.shape[-len(shape):]) == tuple(shape) and len(shape) > 1:
            value = value.reshape(*value.shape[: value.dim() - len(shape)], width)
        value = check_width(value.reshape(-1, value.shape[-1]), width, site, "Patch value")
        if value.shape[0] != self._rows:
            raise ShapeError(f"Patch value at {site.name} has {value.shape[0]} rows, expected {self._rows}")
        p = {"value": value}
        if self._rows > 1:
            p["pos"] = torch.tensor(self.positions, dtype=torch.long)
        if self.direction is not None:
            v = at_layer(self.direction, site, "Patch direction").flatten()
            p["v"] = unit(check_width(v, width, site, "Patch direction"), "Patch direction")
        return p

    def static(self) -> Static:
        return {"indexed": self._rows > 1, "subspace": self.direction is not None}

    def group_key(self) -> tuple[Any, ...]:
        """Rows stack only when their values have the same number of rows (listed positions)."""
        return (*super().group_key(), self._rows)

    @classmethod
    def apply(cls, x: torch.Tensor, p: Params, mask: torch.Tensor | None, indexed: bool = False,
              subspace: bool = False, ctx: StepContext | None = None) -> torch.Tensor:
        value = p["value"][:, 0]  # [B|1, P, D]
        if indexed:
            assert ctx is not None, "an indexed Patch needs the StepContext"
            pos = p["pos"][:, 0]  # [B|1, P]
            start, end = ctx.start[:, None], ctx.prompt_end[:, None]
            column = torch.where(pos >= 0, start + pos, end + pos)  # [B, P]
            match = ctx.columns()[:, :, None] == column[:, None, :]  # [B, T, P]
            hit = match.any(-1)
            which = match.to(torch.int8).argmax(-1)  # [B, T]
            source = torch.gather(value.expand(x.shape[0], -1, -1), 1, which[..., None].expand(-1, -1, x.shape[-1]))
            mask = hit if mask is None else mask & hit
        else:
            source = value  # [B|1, 1, D]
        source = source.to(x.dtype)
        if subspace:
            v = p["v"]
            new = x + dot(source - x, v) * v
        else:
            new = source.expand_as(x)
        if mask is None:
            return new.expand_as(x).contiguous()
        return torch.where(mask[..., None], new, x)
