"""GrAInS steering (Nguyen et al.): add ``10 * alpha * v`` at every position of one layer, then give each
token back its old norm. ``v`` comes from ``sl.directions.grains``."""

from __future__ import annotations

from ..interventions import Add, Steering
from .base import Vectors, layer_list, stamp

#: the authors' code multiplies alpha by 10 before adding
FACTOR = 10.0


def grains(direction: Vectors, layer: int, alpha: float, site: str = "resid_post") -> Steering:
    """Norm-preserving addition of ``10 * alpha * direction[layer]`` at ``layer``, every position."""
    (layer,) = layer_list(layer)
    vector = direction[layer] if hasattr(direction, "layers") else direction
    add = Add(vector, alpha=FACTOR * float(alpha), layers=[layer], site=site, positions="all", norm_match=True)
    return stamp(Steering([add]), "grains", direction, alpha=float(alpha), layers=[layer], site=site)
