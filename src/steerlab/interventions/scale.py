"""Scaling components: knock out (``factor=0``) or boost heads, neurons or residual dimensions."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from ..errors import SteerlabError
from ..sites import Site
from .base import Intervention, Layers, Params, Positions, Static, as_tensor, finite, masked


class Scale(Intervention):
    """Multiply components of the activation by ``factor``.

    ``index`` picks heads at ``attn.heads`` (shape ``[..., n_heads, d_head]``), neurons at
    ``mlp.neurons`` and dimensions elsewhere; ``None`` scales everything. ``factor`` is a number or
    one number per index. With ``renorm=True`` each token's whole activation is then rescaled to
    the norm it had before the scaling (RefusalCliff's head ablation keeps the attention output's norm).
    """

    kind = "scale"
    flat = False
    scalar_args = ("factor", "index", "renorm")

    def __init__(self, factor: float | Sequence[float] | torch.Tensor = 0.0, layers: Layers = None,
                 site: str = "resid_post", positions: Positions = "all", index: int | Iterable[int] | None = None,
                 renorm: bool = False):
        super().__init__(layers=layers, site=site, positions=positions)
        if isinstance(factor, (int, float)):
            finite(factor, "Scale factor")
            self.factor: float | list[float] = factor
        else:
            self.factor = [finite(f, "Scale factor") for f in as_tensor(factor, "Scale factor").flatten().tolist()]
        if index is not None:
            index = [int(index)] if isinstance(index, int) else [int(i) for i in index]
            if isinstance(self.factor, list) and len(self.factor) != len(index):
                raise SteerlabError(f"Scale got {len(self.factor)} factors for {len(index)} indices")
        self.index = index
        self.renorm = bool(renorm)

    @property
    def affine(self) -> bool:
        """Fixed multipliers are linear; rescaling to the old norm (``renorm``) is not."""
        return not self.renorm

    def params(self, site: Site, shape: tuple[int, ...]) -> Params:
        units = shape[0]
        multiplier = torch.ones(shape)
        factor = torch.as_tensor(self.factor, dtype=torch.float32)
        if self.index is None:
            multiplier = multiplier * factor if factor.dim() == 0 else _per_unit(multiplier, factor, units, site)
        else:
            bad = [i for i in self.index if not -units <= i < units]
            if bad:
                raise SteerlabError(f"Scale index {bad} is out of range at {site.name}, which has {units} components")
            view = factor.view(-1, *([1] * (len(shape) - 1))) if factor.dim() else factor
            multiplier[self.index] = view * torch.ones((len(self.index), *shape[1:]))
        return {"m": multiplier}

    def static(self) -> Static:
        return {"renorm": self.renorm}

    @classmethod
    def apply(cls, x: torch.Tensor, p: Params, mask: torch.Tensor | None, renorm: bool = False) -> torch.Tensor:
        y = x * p["m"].to(x.dtype)
        if renorm:
            dims = tuple(range(2, x.dim()))
            y = y * (x.norm(dim=dims, keepdim=True) / y.norm(dim=dims, keepdim=True).clamp_min(1e-12))
        return masked(x, y, mask)


def _per_unit(multiplier: torch.Tensor, factor: torch.Tensor, units: int, site: Site) -> torch.Tensor:
    if factor.numel() != units:
        raise SteerlabError(f"Scale got {factor.numel()} factors but {site.name} has {units} components")
    return multiplier * factor.view(-1, *([1] * (multiplier.dim() - 1)))
