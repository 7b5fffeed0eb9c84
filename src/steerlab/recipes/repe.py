"""RepE / repeng control vectors (Zou et al.): unit PCA reading vectors added over a band of layers.

The vector at each layer is the first principal component of the pairs' differences (``pca_diff``),
unit norm and signed so positives project higher; the control adds ``coeff * v_l`` to the block
output at every position of every layer in the band.
"""

from __future__ import annotations

from ..interventions import Add, Steering
from .base import Layers, Positions, Vectors, layer_list, stamp


def repe(direction: Vectors, layers: Layers, coeff: float, site: str = "resid_post", positions: Positions = "all",
         norm_match: bool = False) -> Steering:
    """Add ``coeff * direction[l]`` at every layer of ``layers`` (a band), all positions by default.

    ``direction`` is normally ``sl.directions.pca(...)`` (unit vectors), so ``coeff`` is in units
    of the residual stream's scale; ``norm_match`` keeps each token's norm (repeng ``normalize=True``).
    """
    chosen = layer_list(layers)
    vectors = {layer: direction[layer] for layer in chosen} if hasattr(direction, "layers") else direction
    steering = Steering([Add(vectors, alpha=coeff, layers=chosen, site=site, positions=positions,
                             norm_match=norm_match)])
    return stamp(steering, "repe", direction, coeff=float(coeff), layers=chosen, site=site)
