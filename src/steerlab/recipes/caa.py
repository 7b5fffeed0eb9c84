"""Activation addition with a difference-of-means vector (CAA, Rimsky et al.), at one or several layers.

CAA adds ``alpha * v_l`` to the residual stream (block output) at every position after the user's
instruction: with a chat template, ``positions="last"`` is the last prompt token (the end of the
assistant header) and every generated token. ``v_l`` is the raw mean difference of the pairs.
"""

from __future__ import annotations

from ..interventions import Add, Steering
from .base import Layers, Positions, Vectors, layer_list, stamp


def caa(direction: Vectors, layer: int, alpha: float, site: str = "resid_post",
        positions: Positions = "last") -> Steering:
    """Add ``alpha * direction[layer]`` at one layer (CAA).

    ``direction``: a Direction (its raw vector at ``layer``) or a tensor ``[d]``.
    """
    (layer,) = layer_list(layer)
    vector = direction[layer] if hasattr(direction, "layers") else direction
    steering = Steering([Add(vector, alpha=alpha, layers=[layer], site=site, positions=positions)])
    return stamp(steering, "caa", direction, alpha=float(alpha), layers=[layer], site=site)


def activation_addition(direction: Vectors, layers: Layers, alpha: float, site: str = "resid_post",
                        positions: Positions = "last",                        norm_match: bool = False) -> Steering:
    """Add ``alpha * direction[l]`` at each of ``layers`` (multi-layer activation addition).

    With ``norm_match`` each token keeps its norm (repeng's ``normalize``).
    """
    chosen = layer_list(layers)
    vectors = {layer: direction[layer] for layer in chosen} if hasattr(direction, "layers") else direction
    steering = Steering([Add(vectors, alpha=alpha, layers=chosen, site=site, positions=positions,
                             norm_match=norm_match)])
    return stamp(steering, "activation_addition", direction, alpha=float(alpha), layers=chosen, site=site)
