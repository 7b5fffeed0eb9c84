"""Norm-preserving rotation in a 2-D plane (Selective Steering; Angular Steering).

Two forms:

- ``mode="relative"`` (Selective Steering): rotate the in-plane part by ``angle`` from where it is,
  ``a' = a cos θ − c sin θ``, ``c' = a sin θ + c cos θ`` with ``a = x·b1``, ``c = x·b2``.
  Exactly norm-preserving; ``angle=0`` is the identity.
- ``mode="absolute"`` (Angular Steering): set the in-plane angle (measured from ``b1`` towards
  ``b2``) to ``angle``, keeping the in-plane magnitude: ``x − Px + ‖Px‖(cos θ b1 + sin θ b2)``.
  With ``adaptive=True`` only tokens with ``x·b1 > threshold`` are changed.

Without a ``plane`` (second axis), the plane is each token's own span of ``x`` and the direction:
``relative`` turns ``x`` towards the direction by ``angle`` and ``absolute`` sets the angle between them.
Angles are in degrees.
"""

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
    Static,
    VectorLike,
    at_layer,
    check_width,
    dot,
    finite,
    numel,
    unit,
)

MODES = ("relative", "absolute")


class Rotate(Intervention):
    """Rotate ``x`` in the plane of ``direction`` (b1) and ``plane`` (b2), or towards ``direction``."""

    kind = "rotate"
    tensor_args = ("direction", "plane")
    scalar_args = ("angle", "mode", "adaptive", "threshold")

    def __init__(self, direction: VectorLike, angle: float, layers: Layers = None, site: str = "resid_post",
                 positions: Positions = "all", plane: VectorLike | None = None, mode: str = "relative",
                 adaptive: bool = False, threshold: float = 0.0):
        super().__init__(layers=layers, site=site, positions=positions)
        if mode not in MODES:
            raise SteerlabError(f"Rotate mode={mode!r} is not allowed; use 'relative' or 'absolute'")
        if adaptive and plane is None:
            raise SteerlabError("Rotate(adaptive=True) needs a plane (b2); the adaptive mask is defined on a fixed plane")
        self.direction = self._tensor_arg(direction, "Rotate direction")
        self.plane = None if plane is None else self._tensor_arg(plane, "Rotate plane")
        self.angle = finite(angle, "Rotate angle")
        self.mode = mode
        self.adaptive = bool(adaptive)
        self.threshold = finite(threshold, "Rotate threshold", MAX_VALUE)

    @property
    def affine(self) -> bool:
        """A relative turn in a fixed plane is linear; setting an angle, or a per-token plane, is not."""
        return self.mode == "relative" and self.plane is not None and not self.adaptive

    def default_layers(self) -> list[int] | None:
        return sorted(self.direction) if isinstance(self.direction, dict) else None

    def params(self, site: Site, shape: tuple[int, ...]) -> Params:
        width = numel(shape)
        b1 = unit(check_width(at_layer(self.direction, site, "Rotate direction").flatten(), width, site,
                              "Rotate direction"), "Rotate direction")
        theta = math.radians(self.angle)
        p = {"b1": b1, "cos": torch.tensor([math.cos(theta)]), "sin": torch.tensor([math.sin(theta)])}
        if self.plane is not None:
            b2 = check_width(at_layer(self.plane, site, "Rotate plane").flatten().float(), width, site, "Rotate plane")
            b2 = b2 - (b2 @ b1) * b1
            p["b2"] = unit(b2, "Rotate plane (after removing its part along the direction)")
        if self.adaptive:
            p["threshold"] = torch.tensor([self.threshold])
        return p

    def static(self) -> Static:
        return {"mode": self.mode, "plane": self.plane is not None, "adaptive": self.adaptive}

    @classmethod
    def neutral(cls, p: Params, static: Static) -> Params | None:
        """A zero relative angle (the absolute form has no identity angle)."""
        if static["mode"] != "relative":
            return None
        return {**p, "cos": torch.ones_like(p["cos"]), "sin": torch.zeros_like(p["sin"])}

    @classmethod
    def prepare(cls, p: Params, static: Static) -> Params:
        return {**p, "cos_m1": p["cos"] - 1}  # cos θ − 1, so a zero angle adds exactly zero

    @classmethod
    def apply(cls, x: torch.Tensor, p: Params, mask: torch.Tensor | None, mode: str = "relative",
              plane: bool = False, adaptive: bool = False) -> torch.Tensor:
        b1, cos, sin = p["b1"], p["cos"], p["sin"]
        a = dot(x, b1)
        if plane:
            b2 = p["b2"]
            c = dot(x, b2)
            if mode == "absolute":
                r = torch.sqrt(a * a + c * c)
                new_a, new_c = r * cos, r * sin
            else:
                new_a, new_c = a * cos - c * sin, a * sin + c * cos
            delta = (new_a - a) * b1 + (new_c - c) * b2
            if adaptive:
                delta = delta * (a > p["threshold"]).to(x.dtype)
        else:
            perp = torch.addcmul(x, a, b1, value=-1)  # x - a b1
            n = torch.linalg.vector_norm(perp, dim=-1, keepdim=True)
            if mode == "absolute":
                r = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
                da, dn = r * cos - a, r * sin - n
            else:  # turn towards b1: rotate (a, n) by -angle in the (b1, e) plane; differences from (a, n)
                cos_m1 = p["cos_m1"]
                da = torch.addcmul(a * cos_m1, n, sin)
                dn = torch.addcmul(n * cos_m1, a, sin, value=-1)
            if mask is not None:
                m = mask[..., None].to(x.dtype)
                da, dn = da * m, dn * m
            # x + da b1 + dn e, with e = perp / |perp| folded into a per-token scale
            out = torch.addcmul(x, da, b1)
            return out.addcmul_(dn.div_(n.clamp_min_(1e-12)), perp)
        if mask is not None:
            delta = delta * mask[..., None].to(x.dtype)
        return x + delta
