"""Selective Steering (Dang & Ngo): a norm-preserving rotation by an angle, relative
to each token's own position in the plane, only at the discriminative layers' norm outputs."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..interventions import Rotate, Steering
from .base import Layers, Positions, layer_list, stamp
from .plane import NORM_SITES


def selective(b1: torch.Tensor, b2: torch.Tensor, angle: float, layers: Layers, sites: Sequence[str] = NORM_SITES,
              positions: Positions = "all") -> Steering:
    """Rotate the ``(b1, b2)`` part of every token by ``angle`` degrees at ``sites`` of ``layers``.

    ``angle=0`` is the identity; the token's norm is unchanged. ``layers`` are normally the
    discriminative ones (``discriminative_layers``).
    """
    chosen = layer_list(layers)
    items = [Rotate(b1, angle, layers=chosen, site=site, positions=positions, plane=b2, mode="relative")
             for site in sites]
    return stamp(Steering(items), "selective", None, angle_deg=float(angle), layers=chosen, sites=list(sites))
