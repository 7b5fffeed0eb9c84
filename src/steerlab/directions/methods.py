"""Directions from a model and a contrastive set: mean difference, PCA (RepE), logistic probe.

Thin wrappers: capture the pairs once (``capture_pairs``), run the estimator on the tensors
(``estimators``) and wrap the result in a ``Direction`` with its provenance. Pass ``acts=`` (from
``capture_pairs``) to reuse one capture across methods; ``model`` and ``pairs`` may then be None.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from ..errors import SteerlabError
from .capture_pairs import DirectionPositions, PairActivations, Sides, provenance, resolve
from .direction import Direction
from .estimators import mean_diff_from, pca_from, probe_from
from .probe import as_probe

if TYPE_CHECKING:
    from ..interventions.base import Layers
    from ..models.model import Model


def mean_diff(model: Model | None, pairs: Sides | None, layers: Layers = None, positions: DirectionPositions = "last", site: str = "resid_post",
              chat: bool = False, batch_size: int = 16, acts: PairActivations | None = None) -> Direction:
    """Per layer, ``mean(positive activations) - mean(negative activations)`` (raw, float64 sums).

    The difference-of-means / CAA vector. ``pairs``: a ContrastiveSet, or ``(positive_texts,
    negative_texts)`` of any sizes (the mean of each side). ``layers``: None or ``"all"``, an int or
    a list (negatives count from the end). ``positions``: ``"last"`` token, ``"mean"`` over tokens,
    a token index (``-4``: 4th from each text's end, as interventions count) or a list (their mean).
    """
    acts = resolve(model, pairs, layers, site, positions, chat, batch_size, acts)
    vectors = mean_diff_from(acts.positive, acts.negative)
    return Direction(vectors.float(), acts.held, meta=provenance("mean_diff", acts))


def pca(model: Model | None, pairs: Sides | None, layers: Layers = None, positions: DirectionPositions = "last", site: str = "resid_post",
        chat: bool = False, batch_size: int = 16, method: str = "pca_diff", center: bool = True,
        acts: PairActivations | None = None) -> Direction:
    """Per layer, the first principal component of the paired activations (repeng's reading vector).

    ``method="pca_diff"`` runs PCA on ``h(pos_i) - h(neg_i)`` (mean-centred when ``center``);
    ``"pca_center"`` subtracts each pair's midpoint and runs PCA on both texts. Vectors have unit
    norm, signed so that most positives project higher than their negatives. ``meta["scores"]``
    holds each layer's explained-variance ratio; ``meta["agreement"]`` the fraction of pairs in order.
    """
    acts = resolve(model, pairs, layers, site, positions, chat, batch_size, acts)
    fit = pca_from(acts.positive, acts.negative, method=method, center=center)
    meta = provenance(method, acts, center=center, score="explained_variance_ratio",
                      scores=_per_layer(acts.held, fit.explained), agreement=_per_layer(acts.held, fit.agreement))
    return Direction(fit.vectors.float(), acts.held, meta=meta)


def probe(model: Model | None, pairs: Sides | None, layers: Layers = None, positions: DirectionPositions = "last", site: str = "resid_post",
          chat: bool = False, batch_size: int = 16, test: float = 0.25, seed: int = 0, C: float = 1.0,
          standardize: bool = True, acts: PairActivations | None = None) -> Direction:
    """Per layer, a logistic-regression probe (positive vs negative); its weight vector is the direction.

    The probe is fit on a ``1 - test`` share of the pairs (split with ``seed``) on z-scored
    features, and mapped back to raw activations: ``x @ direction[layer] + meta["intercept"][layer]``
    is its logit (see ``probe_score``; ``sl.directions.as_probe`` reads it as a ``Probe``). ``meta["scores"][layer]`` is the held-out accuracy (the
    training accuracy when ``test=0``, which fits on every pair).
    """
    acts = resolve(model, pairs, layers, site, positions, chat, batch_size, acts)
    fit = probe_from(acts.positive, acts.negative, test=test, seed=seed, C=C, standardize=standardize)
    meta = provenance("probe", acts, score="heldout_accuracy" if test else "train_accuracy",
                      scores=_per_layer(acts.held, fit.accuracy),
                      train_accuracy=_per_layer(acts.held, fit.train_accuracy),
                      intercept=_per_layer(acts.held, fit.intercept),
                      test=test, seed=seed, C=C, standardize=standardize, n_train=fit.n_train, n_test=fit.n_test)
    return Direction(fit.coef.float(), acts.held, meta=meta)


def probe_score(direction: Direction, activations: torch.Tensor | np.ndarray, layer: int | None = None) -> torch.Tensor:
    """A probe direction's logit on new activations ``[n, d]`` (or ``[d]``) at ``layer``.

    ``> 0`` means the probe predicts "positive"; ``torch.sigmoid`` of it is the probability.
    ``layer`` may be omitted when the direction holds one layer.
    """
    intercepts = direction.meta.get("intercept")
    if not intercepts:
        raise SteerlabError(f"probe_score needs a probe direction (with meta['intercept']); this one was made by "
                            f"{direction.meta.get('method', 'an unknown method')!r}")
    if layer is None:
        if len(direction) != 1:
            raise SteerlabError(f"layer is required: this direction holds layers {direction.layers}")
        layer = direction.layers[0]
    w = direction[layer]
    x = torch.as_tensor(activations).float()
    if x.shape[-1] != w.shape[0]:
        raise SteerlabError(f"activations have width {x.shape[-1]}, but the probe at layer {layer} expects "
                            f"{w.shape[0]}")
    return as_probe(direction, layer).score(x, layer)


def _per_layer(layers: list[int], values: torch.Tensor) -> dict[int, float]:
    values = values.reshape(-1)
    return {layer: float(values[i]) for i, layer in enumerate(layers)}
