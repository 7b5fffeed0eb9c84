"""Directional ablation (Arditi et al.): project one direction out of every writer of the residual stream.

Removing ``r̂`` from the embedding and from each layer's attention and MLP outputs keeps the
residual stream orthogonal to ``r̂`` everywhere, which is what weight orthogonalisation bakes.
"""

from __future__ import annotations

import torch

from ..errors import SteerlabError
from ..interventions import Ablate, Steering
from ..interventions.base import per_layer
from .base import Layers, Vectors, stamp


def directional_ablation(direction: Vectors, layers: Layers | None = None) -> Steering:
    """``Steering`` of ``Ablate`` at ``embed`` and at every layer's ``attn_out`` and ``mlp_out``.

    ``direction``: a tensor ``[d]`` (or a subspace ``[k, d]``) used everywhere, or a Direction /
    ``{layer: vector}``. One held layer means that vector everywhere (the usual case: a direction
    picked at one layer); several mean layer ``l`` uses its own vector and the embedding the first
    one. ``layers`` (default all) restricts the per-layer ablations; the embedding is always ablated.
    """
    vectors = per_layer(direction, "directional_ablation direction")
    if isinstance(vectors, dict) and len(vectors) == 1:
        vectors = next(iter(vectors.values()))
    if isinstance(vectors, torch.Tensor):
        items = [Ablate(vectors, site="embed"), Ablate(vectors, layers=layers, site="attn_out"),
                 Ablate(vectors, layers=layers, site="mlp_out")]
        return stamp(Steering(items), "directional_ablation", direction)
    if not vectors:
        raise SteerlabError("directional_ablation direction holds no vectors")
    held = sorted(vectors)
    if layers is None:
        chosen = held
    else:
        try:
            chosen = sorted({int(x) for x in ([layers] if isinstance(layers, int) else layers)})
        except (TypeError, ValueError):
            raise SteerlabError(f"directional_ablation layers must be None, an int or a list of ints, "
                                f"got {layers!r}") from None
    missing = [x for x in chosen if x not in vectors]
    if missing or not chosen:
        raise SteerlabError(f"directional_ablation layers={layers!r}: the direction holds vectors for layers "
                            f"{held} only; give those layers, or a direction with one vector to use everywhere")
    items = [Ablate(vectors[chosen[0]], site="embed"), Ablate(vectors, layers=chosen, site="attn_out"),
             Ablate(vectors, layers=chosen, site="mlp_out")]
    return stamp(Steering(items), "directional_ablation", direction)
