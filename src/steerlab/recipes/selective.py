"""Selective Steering (Dang & Ngo, METHODS.md §1.4): a norm-preserving rotation by an angle, relative
to each token's own position in the plane, only at the discriminative layers' norm outputs."""

from __future__ import annotations

from ..interventions import Rotate, Steering
from .base import layer_list, stamp
from .plane import NORM_SITES


def selective(b1, b2, angle: float, layers, sites=NORM_SITES, positions="all") -> Steering:
    """Rotate the ``(b1, b2)`` part of every token by ``angle`` degrees at ``sites`` of ``layers``.

    ``angle=0`` is the identity; the token's norm is unchanged. ``layers`` are normally the
    discriminative ones (``discriminative_layers``).
    """
    chosen = layer_list(layers)
    items = [Rotate(b1, angle, layers=chosen, site=site, positions=positions, plane=b2, mode="relative")
             for site in sites]
    return stamp(Steering(items), "selective", None, angle_deg=float(angle), layers=chosen, sites=list(sites))
