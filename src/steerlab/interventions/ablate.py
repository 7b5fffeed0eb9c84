"""Directional ablation: project a direction (or subspace) out, ``x - (x·r̂) r̂`` (Arditi et al.)."""

from __future__ import annotations

import torch

from ..sites import Site
from .base import (
    Intervention,
    Layers,
    Params,
    Positions,
    Static,
    VectorLike,
    at_layer,
    check_width,
    dot,
    numel,
    orthonormal_rows,
)


class Ablate(Intervention):
    """Remove the component of ``x`` along ``direction``.

    ``direction`` is a vector ``[d]``, a subspace ``[k, d]`` (rows need not be orthonormal), a
    ``{layer: tensor}`` dict or a Direction. ``sl.recipes.directional_ablation`` applies it at every
    writer of the residual stream, which is what weight orthogonalisation bakes exactly.
    """

    kind = "ablate"
    tensor_args = ("direction",)

    def __init__(self, direction: VectorLike, layers: Layers = None, site: str = "resid_post",
                 positions: Positions = "all"):
        super().__init__(layers=layers, site=site, positions=positions)
        self.direction = self._tensor_arg(direction, "Ablate direction")

    @property
    def affine(self) -> bool:
        """A fixed projection ``x - P x`` is linear."""
        return True

    def default_layers(self) -> list[int] | None:
        return sorted(self.direction) if isinstance(self.direction, dict) else None

    def params(self, site: Site, shape: tuple[int, ...]) -> Params:
        basis = orthonormal_rows(at_layer(self.direction, site, "Ablate direction"), "Ablate direction")
        check_width(basis, numel(shape), site, "Ablate direction")
        return {"basis": basis}  # [k, D]

    def static(self) -> Static:
        sample = next(iter(self.direction.values())) if isinstance(self.direction, dict) else self.direction
        return {"rank": 1 if sample.dim() == 1 else int(sample.shape[0])}

    @classmethod
    def neutral(cls, p: Params, static: Static) -> Params | None:
        return {"basis": torch.zeros_like(p["basis"])}  # nothing to project out

    @classmethod
    def prepare(cls, p: Params, static: Static) -> Params:
        if static["rank"] == 1:  # the one direction as [B|1, 1, D], ready to broadcast
            return {"basis": p["basis"], "vector": p["basis"][:, :, 0]}
        return p

    @classmethod
    def apply(cls, x: torch.Tensor, p: Params, mask: torch.Tensor | None, rank: int = 1) -> torch.Tensor:
        if rank == 1:  # one direction: a row-wise dot product and one fused multiply-subtract
            vector = p["vector"]
            coef = dot(x, vector)  # [B, T, 1]
            if mask is not None:
                coef = coef * mask[..., None].to(x.dtype)
            return torch.addcmul(x, coef, vector, value=-1)
        basis = p["basis"][:, 0]  # [B|1, k, D]
        coef = x @ basis.transpose(-1, -2)  # [B, T, k]
        if mask is not None:
            coef = coef * mask[..., None].to(x.dtype)
        return x - coef @ basis
