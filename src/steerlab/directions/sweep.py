"""Layer sweep: how well each layer separates positives from negatives, one row per layer.

Columns of the table (all floats unless noted):

- ``layer`` (int).
- ``probe_acc``: held-out accuracy of a logistic probe fit on the training pairs.
- ``diff_acc``: held-out accuracy of the training mean-difference direction, thresholded half
  way between the two training class means of the projections.
- ``cohens_d``: Cohen's d of the held-out positives' vs negatives' projections onto the unit
  training mean-difference direction.
- ``mu_pos``, ``mu_neg``, ``opposite_sign`` (bool): Selective Steering's alignment test
  on all pairs: every activation unit-normalised and projected onto the unit
  mean difference ``b1`` of all pairs, averaged per class; True when the two means differ in sign.
- ``norm``: norm of the raw mean-difference vector over all pairs.

The split is over whole pairs, as ``ContrastiveSet.split(test, seed)`` makes it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from ..data.contrastive import ContrastiveSet
from ..errors import ShapeError
from .capture_pairs import PairActivations, resolve
from .estimators import class_alignment, cohens_d, probe_from, split_rows

if TYPE_CHECKING:
    from ..interventions.base import Layers
    from ..models.model import Model

COLUMNS = ["layer", "probe_acc", "diff_acc", "cohens_d", "mu_pos", "mu_neg", "opposite_sign", "norm"]


def sweep(model: Model | None, pairs: ContrastiveSet | None, layers: Layers = None, site: str = "resid_post", positions: str = "last",
          test: float = 0.25, seed: int = 0, chat: bool = False, batch_size: int = 16, C: float = 1.0,
          acts: PairActivations | None = None) -> pd.DataFrame:
    """Per-layer separability of ``pairs`` at ``site``, from one capture of every layer.

    Returns a DataFrame with one row per layer (columns in the module docstring);
    ``table.attrs`` records the model, data set, site, positions, split and ``n_layers``, which
    ``recommend_layers`` uses to find the middle of the model.
    """
    acts = resolve(model, pairs, layers, site, positions, chat, batch_size, acts)
    table = sweep_from(acts.positive, acts.negative, acts.held, test=test, seed=seed, C=C)
    table.attrs.update({"model": acts.model, "dataset": acts.dataset, "site": acts.site,
                        "positions": acts.positions, "test": test, "seed": seed, "n_layers": acts.n_layers})
    return table


def sweep_from(positive: torch.Tensor | np.ndarray, negative: torch.Tensor | np.ndarray,
               layers: list[int] | None = None, test: float = 0.25, seed: int = 0,
               C: float = 1.0) -> pd.DataFrame:
    """The sweep on precomputed activations ``[n, n_layers, d]`` (``layers`` labels the columns)."""
    pos, neg = torch.as_tensor(positive).double(), torch.as_tensor(negative).double()
    if pos.dim() == 2:
        pos, neg = pos[:, None], neg[:, None]
    layers = list(range(pos.shape[1])) if layers is None else [int(x) for x in layers]
    if len(layers) != pos.shape[1]:
        raise ShapeError(f"layers={layers} names {len(layers)} layers but the activations hold {pos.shape[1]}")
    fit = probe_from(pos, neg, test=test, seed=seed, C=C)
    (p_train, p_test), (n_train, n_test) = split_rows(pos.shape[0], neg.shape[0], test, seed)
    if not p_test:  # test=0: the held-out columns fall back to the training rows
        p_test, n_test = p_train, n_train
    rows: list[dict[str, Any]] = []
    for j, layer in enumerate(layers):
        train_diff = pos[p_train, j].mean(0) - neg[n_train, j].mean(0)
        unit = train_diff / train_diff.norm().clamp_min(1e-300)
        proj_pos, proj_neg = pos[p_test, j] @ unit, neg[n_test, j] @ unit
        threshold = ((pos[p_train, j] @ unit).mean() + (neg[n_train, j] @ unit).mean()) / 2
        correct = int((proj_pos > threshold).sum()) + int((proj_neg < threshold).sum())
        full_diff = pos[:, j].mean(0) - neg[:, j].mean(0)
        mu_pos, mu_neg = class_alignment(pos[:, j], neg[:, j], full_diff)
        rows.append({"layer": layer, "probe_acc": float(fit.accuracy.reshape(-1)[j]),
                     "diff_acc": correct / (len(proj_pos) + len(proj_neg)),
                     "cohens_d": cohens_d(proj_pos, proj_neg), "mu_pos": mu_pos, "mu_neg": mu_neg,
                     "opposite_sign": bool(mu_pos * mu_neg < 0), "norm": float(full_diff.norm())})
    return pd.DataFrame(rows, columns=COLUMNS)
