"""Conditional Activation Steering (CAST, Lee et al.).

A *condition* direction is read from the prompt (its hidden states averaged over every prompt
token) at one layer; when its score passes a threshold, the *behaviour* vectors are added at the
input of each behaviour layer for the whole generation. The condition layer, threshold and
comparator are chosen by a grid search that maximises F1 of "fires" on labelled prompts.

Condition vectors are the first principal component of the pairs' mean-token states with each
pair's midpoint removed (``pca_center``, IBM's ``pca_pairwise``), signed so that the prompts that
should fire project higher. The score is ``cos(h̄, tanh(P_c h̄))`` (``metric="cast"``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import pandas as pd
import torch

from ..data.contrastive import ContrastiveSet
from ..directions.estimators import pca_from
from ..errors import DataError, SteerlabError
from ..interventions import Add, Conditional, Steering
from ..models import Model
from ..sites import normalize_layers
from .base import Layers, Positions, Vectors, layer_list, stamp

#: The threshold grid of the search (IBM's code uses 0.00-1.00 in steps of 0.01; scores can be negative).
THRESHOLDS = tuple(round(-1 + 0.01 * i, 2) for i in range(201))


@dataclass
class ConditionFit:
    """The chosen condition: ``vector`` (unit, ``[d]``) at ``layer`` of ``site``, fires when the score
    is ``comparator`` ``threshold``; ``f1`` on the search data; ``table`` holds each layer's best."""

    vector: torch.Tensor
    layer: int
    threshold: float
    comparator: str
    f1: float
    site: str = "resid_post"
    metric: str = "cast"
    table: pd.DataFrame = field(default_factory=pd.DataFrame)

    def fires(self, scores: torch.Tensor) -> torch.Tensor:
        """Which scores make the condition fire."""
        return scores > self.threshold if self.comparator == ">" else scores < self.threshold


def condition_scores(states: torch.Tensor, vector: torch.Tensor, metric: str = "cast") -> torch.Tensor:
    """Scores of mean prompt states ``[n, d]`` against a condition ``vector`` ``[d]``, computed by the
    same code the ``Conditional`` sensor runs during generation."""
    h = torch.as_tensor(states).float()
    c = torch.as_tensor(vector).float()
    c = c / c.norm()
    prompt = torch.ones(h.shape[0], 1, dtype=torch.bool)
    return Conditional.score(h[:, None, :], c[None], prompt, metric, "mean")


def f1_grid(scores: torch.Tensor, labels: torch.Tensor, thresholds: torch.Tensor, comparator: str) -> torch.Tensor:
    """F1 of ``fires = scores > t`` (or ``< t``) against boolean ``labels``, for every threshold ``t``."""
    fires = scores[None] > thresholds[:, None] if comparator == ">" else scores[None] < thresholds[:, None]
    tp = (fires & labels[None]).sum(1).double()
    fp = (fires & ~labels[None]).sum(1).double()
    fn = (~fires & labels[None]).sum(1).double()
    return torch.where(tp > 0, 2 * tp / (2 * tp + fp + fn), torch.zeros_like(tp))


def _plateau_middle(f1: torch.Tensor, best: float) -> int:
    """Index in the middle of the first run of thresholds reaching ``best`` (a margin on both sides)."""
    hits = (f1 >= best - 1e-12).nonzero().flatten().tolist()
    run = [hits[0]]
    for i in hits[1:]:
        if i != run[-1] + 1:
            break
        run.append(i)
    return run[len(run) // 2]


def search_condition_from(fire: torch.Tensor, quiet: torch.Tensor, vectors: torch.Tensor,
                          layers: Sequence[int] | None = None, thresholds: Iterable[float] = THRESHOLDS,
                          metric: str = "cast") -> ConditionFit:
    """Grid search over layers, thresholds and both comparators for the best F1 of "fires".

    ``fire`` / ``quiet``: mean prompt states ``[n, L, d]`` of prompts that should / should not fire;
    ``vectors``: one condition vector per layer ``[L, d]``. Ties go to the earlier layer, then ``>``;
    within the best threshold run the middle threshold is taken.
    """
    fire, quiet = torch.as_tensor(fire).float(), torch.as_tensor(quiet).float()
    if fire.dim() == 2:
        fire, quiet = fire[:, None], quiet[:, None]
    vectors = torch.as_tensor(vectors).float().reshape(fire.shape[1], -1)
    layers = list(range(fire.shape[1])) if layers is None else [int(x) for x in layers]
    if not len(fire) or not len(quiet):
        raise DataError("the condition search needs prompts that should fire and prompts that should not")
    values = [float(t) for t in thresholds]
    grid = torch.as_tensor(values, dtype=torch.float32)
    labels = torch.cat([torch.ones(len(fire), dtype=torch.bool), torch.zeros(len(quiet), dtype=torch.bool)])
    if not layers:
        raise DataError("the condition search needs at least one layer; layers is empty")
    rows = []
    per_layer: list[tuple[float, float, str, int, int]] = []   # (f1, threshold, comparator, j, layer)
    for j, layer in enumerate(layers):
        scores = condition_scores(torch.cat([fire[:, j], quiet[:, j]]), vectors[j], metric)
        options = []
        for comparator in (">", "<"):
            f1 = f1_grid(scores, labels, grid, comparator)
            top = float(f1.max())
            options.append((top, values[_plateau_middle(f1, top)], comparator))
        top, threshold, comparator = max(options, key=lambda o: o[0])   # max keeps the first on ties: ">"
        rows.append({"layer": layer, "f1": top, "threshold": threshold, "comparator": comparator})
        per_layer.append((top, threshold, comparator, j, layer))
    best_f1, threshold, comparator, j, layer = max(per_layer, key=lambda o: o[0])   # ties: the earlier layer
    return ConditionFit(vectors[j] / vectors[j].norm(), layer, threshold, comparator, best_f1, metric=metric,
                        table=pd.DataFrame(rows))


def find_condition(model: Model, pairs: ContrastiveSet, fire: str = "positive", layers: Layers | None = None,
                   site: str = "resid_post", chat: bool = True, thresholds: Iterable[float] = THRESHOLDS,
                   metric: str = "cast",
                   batch_size: int = 32) -> ConditionFit:
    """Fit condition vectors on ``pairs`` and search the condition point (module docstring).

    ``fire`` says which side should trigger steering (``"positive"`` or ``"negative"``). Prompts are
    chat-templated by default, as generation sees them, and averaged over all their tokens.
    """
    if fire not in ("positive", "negative"):
        raise SteerlabError(f"fire={fire!r} must be 'positive' or 'negative'")
    chosen = normalize_layers(layers, model.n_layers)
    acts = model.capture(pairs.positive + pairs.negative, sites=site, layers=chosen, positions="mean", chat=chat,
                         batch_size=batch_size, progress=False)
    stacked = torch.stack([acts.tensor(f"layers.{layer}.{site}") for layer in chosen], 1)
    n = len(pairs)
    pos, neg = (stacked[:n], stacked[n:]) if fire == "positive" else (stacked[n:], stacked[:n])
    vectors = pca_from(pos, neg, method="pca_center").vectors
    fit = search_condition_from(pos, neg, vectors, chosen, thresholds, metric)
    fit.site = site
    return fit


def condition_fires(model: Model, fit: ConditionFit, prompts: list[str], chat: bool = True,
                    batch_size: int = 32) -> torch.Tensor:
    """Whether the condition fires on each prompt (as the sensor will during generation)."""
    acts = model.capture(prompts, sites=f"layers.{fit.layer}.{fit.site}", positions="mean", chat=chat,
                         batch_size=batch_size, progress=False)
    return fit.fires(condition_scores(acts.tensor(f"layers.{fit.layer}.{fit.site}"), fit.vector, fit.metric))


def cast(behaviour: Vectors, layers: Layers, alpha: float, condition: ConditionFit | None, site: str = "resid_pre",
         positions: Positions = "all") -> Steering:
    """Add ``alpha * behaviour[l]`` at ``site`` of each of ``layers`` when ``condition`` fires
    (always, when ``condition`` is None)."""
    chosen = layer_list(layers)
    vectors = {layer: behaviour[layer] for layer in chosen} if hasattr(behaviour, "layers") else behaviour
    add = Add(vectors, alpha=alpha, layers=chosen, site=site, positions=positions)
    if condition is None:
        return stamp(Steering([add]), "cast", behaviour, alpha=float(alpha), layers=chosen, condition=None)
    item = Conditional(add, condition.vector, layer=condition.layer, threshold=condition.threshold,
                       site=condition.site, comparator=condition.comparator, metric=condition.metric,
                       aggregate="mean")
    return stamp(Steering([item]), "cast", behaviour, alpha=float(alpha), layers=chosen,
                 condition={"layer": condition.layer, "threshold": condition.threshold,
                            "comparator": condition.comparator, "f1": condition.f1, "site": condition.site})
