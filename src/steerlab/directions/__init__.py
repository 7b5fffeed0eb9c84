"""Find directions in a model's hidden states: mean difference, PCA (RepE), probe; layer sweep.

    d = sl.directions.mean_diff(model, pairs)            # Direction, one raw vector per layer
    table = sl.directions.sweep(model, pairs)            # per-layer separability (DataFrame)
    layers = sl.directions.recommend_layers(table, k=3)  # where to steer
    p = sl.directions.as_probe(sl.directions.probe(model, pairs))  # a fitted probe as a Probe

The ``*_from`` functions run the same math on precomputed tensors ``[n, n_layers, d]``;
``capture_pairs`` captures a contrastive set once for several methods (pass it as ``acts=``).
Directions travel as llama.cpp control vectors with ``Direction.to_gguf`` / ``from_gguf``.
``transfer`` carries a direction from one model into another through a fitted low-rank linear map.
"""

from . import transfer  # a submodule: sl.directions.transfer.fit, .LinearMap
from .capture_pairs import DIRECTION_POSITIONS, DIRECTION_SITES, PairActivations, capture_pairs
from .direction import Direction
from .estimators import PCAFit, ProbeFit, class_alignment, cohens_d, mean_diff_from, pca_from, probe_from, split_indices
from .grains import grains, integrated_gradients
from .methods import mean_diff, pca, probe, probe_score
from .probe import Probe, as_probe
from .select import recommend_layers
from .sweep import sweep, sweep_from

__all__ = [
    "DIRECTION_POSITIONS", "DIRECTION_SITES", "Direction", "PCAFit", "PairActivations", "Probe", "ProbeFit",
    "as_probe", "capture_pairs", "class_alignment", "cohens_d", "grains", "integrated_gradients", "mean_diff",
    "mean_diff_from", "pca", "pca_from", "probe", "probe_from", "probe_score", "recommend_layers", "split_indices",
    "sweep", "sweep_from", "transfer",
]
