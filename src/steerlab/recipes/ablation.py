"""Directional ablation (Arditi et al., METHODS.md §3.3): project one direction out of every writer.

Removing ``r̂`` from the output of every writer of the residual stream (the embedding and each
layer's attention and MLP outputs) keeps the stream orthogonal to ``r̂`` at every layer. Because each
writer is linear, this recipe is exactly weight orthogonalisation: ``sl.edit.bake`` turns it into
``W <- (I - r̂ r̂ᵀ) W`` for the embedding and every output projection.
"""

from __future__ import annotations

import torch

from ..errors import SteerlabError
from ..interventions import Ablate, Steering
from ..interventions.base import per_layer


def directional_ablation(direction, layers=None) -> Steering:
    """``Steering([Ablate at embed, Ablate at every layer's attn_out and mlp_out])``.

    ``direction`` is a tensor ``[d]`` (or a subspace ``[k, d]``) used everywhere, or a ``Direction``
    / ``{layer: vector}``: if it holds one layer, that vector is used everywhere (the usual case: the
    refusal direction picked at one layer); if it holds several, layer ``l``'s writers use its vector
    at ``l`` and the embedding uses the vector of the first layer listed (``layers`` must then only
    name layers it holds). ``layers`` (default: all) restricts the per-layer ablations; the embedding
    is always included.
    """
    vectors = per_layer(direction, "directional_ablation direction")
    meta = getattr(direction, "meta", None)
    if isinstance(vectors, dict):
        if not vectors:
            raise SteerlabError("directional_ablation direction holds no vectors")
        if len(vectors) == 1:
            vectors = next(iter(vectors.values()))
    if isinstance(vectors, torch.Tensor):
        shared = vectors
        return Steering([Ablate(shared, site="embed"), Ablate(shared, layers=layers, site="attn_out"),
                         Ablate(shared, layers=layers, site="mlp_out")], _meta(meta))
    held = sorted(vectors)
    chosen = held if layers is None else ([layers] if isinstance(layers, int) else layers)
    try:
        chosen = sorted(int(x) for x in chosen)
    except (TypeError, ValueError):
        raise SteerlabError(f"directional_ablation layers must be None, an int or a list of ints, got {layers!r}") from None
    missing = [x for x in chosen if x not in vectors]
    if missing or not chosen:
        raise SteerlabError(f"directional_ablation layers={layers!r}: the direction holds vectors for layers {held} "
                            "only; give those layers, or a direction with one vector to use everywhere")
    return Steering([Ablate(vectors[chosen[0]], site="embed"), Ablate(vectors, layers=chosen, site="attn_out"),
                     Ablate(vectors, layers=chosen, site="mlp_out")], _meta(meta))


def _meta(meta) -> dict:
    out = {"recipe": "directional_ablation"}
    if isinstance(meta, dict) and meta.get("model"):
        out["model"] = meta["model"]
    return out
