"""The direction estimators as pure functions on tensors (no model): mean difference, PCA, probe.

Each takes positive and negative activations ``[n, d]`` (one layer) or ``[n, n_layers, d]``
(every layer at once) and returns per-layer results of the matching shape. Statistics are
computed in float64 so that means over many rows do not lose precision.
"""

from __future__ import annotations

import random
import warnings
from dataclasses import dataclass
from typing import TypeAlias

import numpy as np
import torch

from ..errors import DataError, ShapeError, SteerlabError

PCA_METHODS = ("pca_diff", "pca_center")
#: activations as a tensor, a numpy array or nested lists of numbers
ArrayLike: TypeAlias = torch.Tensor | np.ndarray | list[float] | list[list[float]] | list[list[list[float]]]


def mean_diff_from(positive: ArrayLike, negative: ArrayLike) -> torch.Tensor:
    """``mean(positive) - mean(negative)`` per layer, raw (not normalised), float64.

    The two sides may have different counts; shapes ``[n, d] -> [d]`` or ``[n, L, d] -> [L, d]``.
    """
    pos, neg, squeeze = _pair_of(positive, negative, paired=False)
    out = pos.mean(0) - neg.mean(0)
    return out[0] if squeeze else out


@dataclass
class PCAFit:
    """First principal component per layer: ``vectors`` ``[L, d]`` (unit norm), ``explained`` the
    fraction of variance it explains, ``agreement`` the fraction of pairs whose positive projects
    higher than its negative (at least 0.5 after the sign fix)."""

    vectors: torch.Tensor
    explained: torch.Tensor
    agreement: torch.Tensor


def pca_from(positive: ArrayLike, negative: ArrayLike, method: str = "pca_diff", center: bool = True) -> PCAFit:
    """First principal component of paired activations, per layer (RepE / repeng reading vectors).

    ``method="pca_diff"``: PCA of the differences ``h(pos_i) - h(neg_i)``; ``center=True`` removes
    their mean first, as scikit-learn's PCA does (``center=False``: the top right singular vector
    of the raw differences). ``method="pca_center"``: subtract each pair's midpoint from both of
    its texts and run PCA on the ``2n`` centred rows. The sign is chosen so that for most pairs
    the positive text projects higher than its negative (ties: the larger total projection gap).
    Rows of ``positive`` and ``negative`` must be pairs.
    """
    if method not in PCA_METHODS:
        raise SteerlabError(f"method={method!r} is not a PCA method; use one of {', '.join(PCA_METHODS)}")
    pos, neg, squeeze = _pair_of(positive, negative, paired=True)
    diff = pos - neg                                     # [n, L, d]
    rows = diff if method == "pca_diff" else torch.cat([diff / 2, -diff / 2])
    rows = rows.transpose(0, 1)                          # [L, m, d]
    if center:
        rows = rows - rows.mean(1, keepdim=True)
    _, s, vh = torch.linalg.svd(rows, full_matrices=False)
    vectors = vh[:, 0]                                   # [L, d]
    total = (s ** 2).sum(-1)
    explained = torch.where(total > 0, s[:, 0] ** 2 / total.clamp_min(1e-300), torch.zeros_like(total))
    gap = torch.einsum("nld,ld->nl", diff, vectors)      # projection of pos minus projection of neg
    higher, lower = (gap > 0).double().mean(0), (gap < 0).double().mean(0)
    flip = (lower > higher) | ((lower == higher) & (gap.sum(0) < 0))
    vectors = torch.where(flip[:, None], -vectors, vectors)
    agreement = torch.where(flip, lower, higher)
    if squeeze:
        return PCAFit(vectors[0], explained[0], agreement[0])
    return PCAFit(vectors, explained, agreement)


@dataclass
class ProbeFit:
    """Logistic probes per layer, in the raw activation space: ``score = x @ coef + intercept``
    (positive when the probe says "positive"). ``accuracy`` is on the held-out split (on the
    training data when ``test=0``), ``train_accuracy`` on the training split."""

    coef: torch.Tensor
    intercept: torch.Tensor
    accuracy: torch.Tensor
    train_accuracy: torch.Tensor
    n_train: int
    n_test: int


def probe_from(positive: ArrayLike, negative: ArrayLike, test: float = 0.25, seed: int = 0, C: float = 1.0, standardize: bool = True,
               max_iter: int = 2000) -> ProbeFit:
    """Fit a logistic regression (scikit-learn, L2, strength ``1/C``) positive vs negative per layer.

    A ``test`` fraction is held out (whole pairs when the rows are paired, as
    ``ContrastiveSet.split`` does; per class otherwise) to measure accuracy; ``test=0`` fits on
    everything. With ``standardize`` the features are z-scored on the training split for the fit
    and the coefficients are mapped back, so ``coef`` and ``intercept`` act on raw activations.
    """
    from sklearn.linear_model import LogisticRegression

    pos, neg, squeeze = _pair_of(positive, negative, paired=False)
    (p_train, p_test), (n_train, n_test) = split_rows(pos.shape[0], neg.shape[0], test, seed)
    n_layers = pos.shape[1]
    coef, intercept = torch.zeros(n_layers, pos.shape[2], dtype=torch.float64), torch.zeros(n_layers,
                                                                                             dtype=torch.float64)
    acc, train_acc = torch.zeros(n_layers, dtype=torch.float64), torch.zeros(n_layers, dtype=torch.float64)
    y_train = np.r_[np.ones(len(p_train)), np.zeros(len(n_train))]
    y_test = np.r_[np.ones(len(p_test)), np.zeros(len(n_test))]
    for j in range(n_layers):
        x_train = torch.cat([pos[p_train, j], neg[n_train, j]]).numpy()
        mu, sd = x_train.mean(0), x_train.std(0)
        if not standardize:
            mu, sd = np.zeros_like(mu), np.ones_like(sd)
        sd = np.where(sd > 1e-12, sd, 1.0)
        clf = LogisticRegression(C=C, max_iter=max_iter)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # separable data: lbfgs may warn while the direction is already found
            clf.fit((x_train - mu) / sd, y_train)
        w = clf.coef_[0] / sd
        b = float(clf.intercept_[0] - (clf.coef_[0] * mu / sd).sum())
        coef[j], intercept[j] = torch.from_numpy(w), b
        train_acc[j] = float(((x_train @ w + b > 0) == y_train).mean())
        if len(y_test):
            x_test = torch.cat([pos[p_test, j], neg[n_test, j]]).numpy()
            acc[j] = float(((x_test @ w + b > 0) == y_test).mean())
        else:
            acc[j] = train_acc[j]
    if squeeze:
        coef, intercept, acc, train_acc = coef[0], intercept[0], acc[0], train_acc[0]
    return ProbeFit(coef, intercept, acc, train_acc, len(y_train), len(y_test))


def split_indices(n: int, test: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """Shuffle ``range(n)`` with ``seed`` and cut off a ``test`` fraction (same rule as
    ``ContrastiveSet.split``: at least one row on each side). ``test=0``: everything is training."""
    if not isinstance(test, (int, float)) or not 0 <= test < 1:
        raise DataError(f"test={test!r} must be a fraction in [0, 1)")
    order = list(range(n))
    if test == 0:
        return order, []
    if n < 2:
        raise DataError(f"test={test} holds out part of the data, which needs at least 2 rows per class; got {n}")
    random.Random(seed).shuffle(order)
    cut = max(1, min(n - 1, round(n * (1 - test))))
    return order[:cut], order[cut:]


def split_rows(n_pos: int, n_neg: int, test: float,
               seed: int) -> tuple[tuple[list[int], list[int]], tuple[list[int], list[int]]]:
    """Train/test row indices for each class: the same split for both when the rows are pairs."""
    if n_pos == n_neg:
        split = split_indices(n_pos, test, seed)
        return split, split
    return split_indices(n_pos, test, seed), split_indices(n_neg, test, seed + 1)


def cohens_d(a: ArrayLike, b: ArrayLike) -> float:
    """Cohen's d of two samples: ``(mean a - mean b) / pooled sd`` (sample variances, ddof 1).

    NaN when there are fewer than 3 values in all (no pooled variance); ±inf when the pooled
    variance is 0 but the means differ.
    """
    a, b = torch.as_tensor(a, dtype=torch.float64).flatten(), torch.as_tensor(b, dtype=torch.float64).flatten()
    na, nb = a.numel(), b.numel()
    if na == 0 or nb == 0 or na + nb < 3:
        return float("nan")
    var_a = a.var(unbiased=True) if na > 1 else torch.tensor(0.0, dtype=torch.float64)
    var_b = b.var(unbiased=True) if nb > 1 else torch.tensor(0.0, dtype=torch.float64)
    pooled = (((na - 1) * var_a + (nb - 1) * var_b) / (na + nb - 2)).sqrt()
    gap = float(a.mean() - b.mean())
    if pooled == 0:
        return 0.0 if gap == 0 else float("inf") * (1 if gap > 0 else -1)
    return gap / float(pooled)


def class_alignment(positive: ArrayLike, negative: ArrayLike, direction: ArrayLike) -> tuple[float, float]:
    """Mean of ``x/|x| . b/|b|`` over positives and over negatives (Selective Steering's test).

    A layer where the two means have opposite signs separates the classes on either side of
    the origin along ``direction``. ``positive``/``negative``: ``[n, d]``.
    """
    b = torch.as_tensor(direction, dtype=torch.float64).flatten()
    b = b / b.norm().clamp_min(1e-300)

    def mean_cos(x: ArrayLike) -> float:
        x = torch.as_tensor(x, dtype=torch.float64)
        return float((x / x.norm(dim=-1, keepdim=True).clamp_min(1e-300) @ b).mean())

    return mean_cos(positive), mean_cos(negative)


def _pair_of(positive: ArrayLike, negative: ArrayLike, paired: bool) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """float64 ``[n, L, d]`` tensors (and whether the input was ``[n, d]``), shapes checked."""
    pos, neg = torch.as_tensor(positive), torch.as_tensor(negative)
    if pos.dim() != neg.dim() or pos.dim() not in (2, 3):
        raise ShapeError(f"positive and negative activations must both be [n, d] or [n, n_layers, d], got "
                         f"shapes {tuple(pos.shape)} and {tuple(neg.shape)}")
    squeeze = pos.dim() == 2
    if squeeze:
        pos, neg = pos[:, None], neg[:, None]
    if pos.shape[1:] != neg.shape[1:]:
        raise ShapeError(f"positive activations are {tuple(pos.shape[1:])} per row but negative ones "
                         f"{tuple(neg.shape[1:])}; they must match")
    if pos.shape[0] == 0 or neg.shape[0] == 0:
        raise DataError(f"need at least one positive and one negative activation, got {pos.shape[0]} and "
                        f"{neg.shape[0]}")
    if paired and pos.shape[0] != neg.shape[0]:
        raise ShapeError(f"this method needs pairs: as many positive as negative rows, got {pos.shape[0]} and "
                         f"{neg.shape[0]}")
    return pos.double(), neg.double(), squeeze
