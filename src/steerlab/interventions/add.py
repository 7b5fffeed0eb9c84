"""Activation addition: ``x + alpha * v`` (CAA, RepE control vectors), optionally norm-matched."""

from __future__ import annotations

import torch

from ..sites import Site
from .base import Intervention, Layers, Params, Positions, Static, VectorLike, at_layer, check_width, finite, numel


class Add(Intervention):
    """Add ``alpha * vector`` at a site.

    ``vector`` is a Direction (its raw vector at each layer), a ``{layer: tensor}`` dict or one
    tensor ``[d]`` used at every listed layer. With ``norm_match=True`` each token is rescaled to
    its norm before the addition (repeng's ``normalize``, GrAInS).
    """

    kind = "add"
    tensor_args = ("vector",)
    scalar_args = ("alpha", "norm_match")

    def __init__(self, vector: VectorLike, alpha: float = 1.0, layers: Layers = None, site: str = "resid_post",
                 positions: Positions = "all", norm_match: bool = False):
        super().__init__(layers=layers, site=site, positions=positions)
        self.vector = self._tensor_arg(vector, "Add vector")
        self.alpha = finite(alpha, "Add alpha")
        self.norm_match = bool(norm_match)

    @property
    def affine(self) -> bool:
        """Adding a fixed vector is affine; rescaling to the old norm (``norm_match``) is not."""
        return not self.norm_match

    def default_layers(self) -> list[int] | None:
        return sorted(self.vector) if isinstance(self.vector, dict) else None

    def params(self, site: Site, shape: tuple[int, ...]) -> Params:
        v = check_width(at_layer(self.vector, site, "Add vector").flatten(), numel(shape), site, "Add vector")
        return {"delta": self.alpha * v.float()}

    def static(self) -> Static:
        return {"norm_match": self.norm_match}

    @classmethod
    def neutral(cls, p: Params, static: Static) -> Params | None:
        return None if static["norm_match"] else {"delta": torch.zeros_like(p["delta"])}

    @classmethod
    def apply(cls, x: torch.Tensor, p: Params, mask: torch.Tensor | None, norm_match: bool = False) -> torch.Tensor:
        delta = p["delta"]
        if mask is not None:
            delta = delta * mask[..., None].to(x.dtype)
        y = x + delta
        if norm_match:
            y = y * (x.norm(dim=-1, keepdim=True) / y.norm(dim=-1, keepdim=True).clamp_min(1e-12))
        return y
