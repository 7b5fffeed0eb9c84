"""Angular Steering (Vu & Nguyen): set each token's angle in the ``(b1, b2)`` plane to
an absolute value, keeping its in-plane magnitude, at every layer's norm outputs; with the adaptive
mask only tokens with ``h·b1 > threshold`` are changed."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..interventions import Rotate, Steering
from .base import Positions, stamp
from .plane import NORM_SITES


def angular(b1: torch.Tensor, b2: torch.Tensor, angle: float, layers: Sequence[int] | None = None,
            sites: Sequence[str] = NORM_SITES, adaptive: bool = True, threshold: float = 0.0,
            positions: Positions = "all") -> Steering:
    """Set the in-plane angle (from ``b1`` towards ``b2``) to ``angle`` degrees at ``sites`` of ``layers``
    (default every layer); ``adaptive`` touches only tokens whose projection on ``b1`` exceeds ``threshold``."""
    items = [Rotate(b1, angle, layers=layers, site=site, positions=positions, plane=b2, mode="absolute",
                    adaptive=adaptive, threshold=threshold) for site in sites]
    return stamp(Steering(items), "angular", None, angle_deg=float(angle), adaptive=adaptive,
                 threshold=float(threshold), sites=list(sites), layers=layers if layers is None else list(layers))
