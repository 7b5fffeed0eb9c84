"""The steering plane and the discriminative layers of Selective Steering (Dang & Ngo) and Angular Steering.

Both methods read the outputs of the pre-norms (``attn_in`` and ``mlp_in``: what attention and the
MLP read). For every such hook point ``k`` the unit mean difference ``d_k`` of the pairs is a
candidate direction:

- ``b1`` is the candidate with the largest mean cosine similarity to the others (the most
  consistent direction);
- ``b2`` is the first principal component of the stacked candidates (mean-centred, sign fixed so
  its largest-magnitude entry is positive), made orthogonal to ``b1`` and unit.

A hook point is *discriminative* when the mean of ``ĥ·b1`` over positives and over negatives
(``ĥ = h/‖h‖``) have opposite signs; a layer is kept only when all its hook points are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pandas as pd
import torch

from ..directions import PairActivations
from ..errors import DataError, ShapeError

#: The hook points of Selective / Angular Steering: outputs of each block's pre-norms.
NORM_SITES = ("attn_in", "mlp_in")


@dataclass
class Plane:
    """``b1`` (the feature direction) and ``b2`` (the second axis), unit and orthogonal, ``[d]``.

    ``source`` names the hook point ``b1`` came from; ``consistency[k]`` is candidate ``k``'s mean
    cosine similarity to the others (``names[k]`` its hook point).
    """

    b1: torch.Tensor
    b2: torch.Tensor
    source: str
    names: list[str] = field(default_factory=list)
    consistency: torch.Tensor | None = None


def plane_from(candidates: torch.Tensor | Sequence[torch.Tensor], names: Sequence[str] | None = None) -> Plane:
    """The plane from candidate directions ``[K, d]`` (raw mean differences; normalised here, zero ones
    dropped, so ``names``/``consistency`` list the candidates used)."""
    d = torch.as_tensor(candidates, dtype=torch.float64)
    if d.dim() != 2 or d.shape[0] < 2:
        raise ShapeError(f"plane_from needs at least 2 candidate directions [K, d], got shape {tuple(d.shape)}")
    names = list(names) if names is not None else [str(k) for k in range(d.shape[0])]
    norms = d.norm(dim=-1)
    keep = norms > 1e-6 * norms.max()   # zero candidates (e.g. layer 0 when every text ends alike) say nothing
    if int(keep.sum()) < 2:
        raise DataError("fewer than 2 non-zero candidate directions (identical positives and negatives?)")
    d = d[keep] / norms[keep, None]
    names = [name for name, ok in zip(names, keep.tolist()) if ok]
    k = d.shape[0]
    consistency = ((d @ d.T).sum(1) - 1.0) / (k - 1)
    best = int(consistency.argmax())
    b1 = d[best]
    centred = d - d.mean(0, keepdim=True)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    pc = vh[0]
    if pc[pc.abs().argmax()] < 0:
        pc = -pc
    b2 = pc - (pc @ b1) * b1
    if float(b2.norm()) < 1e-8:
        raise DataError("the first principal component of the candidates is parallel to b1; no plane")
    b2 = b2 / b2.norm()
    return Plane(b1.float(), b2.float(), names[best], list(names), consistency.float())


def steering_plane(acts: Mapping[str, PairActivations]) -> Plane:
    """The plane from ``{site: PairActivations}`` captured at the norm outputs (``NORM_SITES``)."""
    vectors: list[torch.Tensor] = []
    names: list[str] = []
    for site, pair in acts.items():
        diff = pair.positive.double().mean(0) - pair.negative.double().mean(0)   # [L, d]
        for j, layer in enumerate(pair.layers or []):   # layers is always set once PairActivations is built
            vectors.append(diff[j])
            names.append(f"layers.{layer}.{site}")
    return plane_from(torch.stack(vectors), names)


def alignment_from(positive: torch.Tensor, negative: torch.Tensor,
                   b1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per hook point, the mean of ``ĥ·b̂1`` over positives and negatives: ``[n, K, d]`` -> two ``[K]``."""
    b = torch.as_tensor(b1, dtype=torch.float64)
    b = b / b.norm()

    def mean_cos(x: torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(x, dtype=torch.float64)
        return (x / x.norm(dim=-1, keepdim=True).clamp_min(1e-300) @ b).mean(0)

    return mean_cos(positive), mean_cos(negative)


def discriminative_layers(acts: Mapping[str, PairActivations], b1: torch.Tensor) -> tuple[list[int], pd.DataFrame]:
    """Layers whose every hook point in ``acts`` (``{site: PairActivations}``) separates the classes
    by sign along ``b1``; and the per-hook-point table (layer, site, mu_pos, mu_neg, opposite)."""
    rows = []
    for site, pair in acts.items():
        mu_pos, mu_neg = alignment_from(pair.positive, pair.negative, b1)
        for j, layer in enumerate(pair.layers or []):
            rows.append({"layer": layer, "site": site, "mu_pos": float(mu_pos[j]), "mu_neg": float(mu_neg[j]),
                         "opposite": bool(mu_pos[j] * mu_neg[j] < 0)})
    table = pd.DataFrame(rows, columns=["layer", "site", "mu_pos", "mu_neg", "opposite"])
    passed = table.groupby("layer")["opposite"].all()
    return [int(layer) for layer, ok in passed.items() if ok], table
