"""Refusal-style direction selection and addition (Arditi et al.).

Candidates are the raw mean differences ``r_l`` of the pairs at each layer's ``resid_pre`` (last
token). Each is scored on validation pairs the training direction never saw:

- ``bypass``: the mean behaviour score of the *positive* texts with ``r̂_l`` ablated everywhere;
- ``induce``: the mean score of the *negative* texts with ``r_l`` added at ``resid_pre`` of layer ``l``;
- ``kl``: KL(clean ‖ ablated) of the negative texts' next-token distributions.

Candidates at ``l >= 0.8 L``, with ``kl > 0.1`` or ``induce < 0`` are discarded and the lowest
``bypass`` wins. When every candidate is discarded the KL rule, then the induce rule, is relaxed
(recorded in ``Selection.relaxed``). The chosen ``r_l`` is then added at ``resid_pre`` of ``l``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import torch

from ..directions import Direction
from ..errors import DataError, SteerlabError
from ..interventions import Add, Steering
from ..models import Model
from .ablation import directional_ablation
from .base import Positions, Vectors, stamp
from .scores import LogitScore

COLUMNS = ["layer", "bypass", "induce", "kl", "eligible"]


@dataclass
class Selection:
    """The chosen candidate: ``direction`` holds its raw vector at ``layer``; ``table`` scores every
    candidate; ``baseline`` the unsteered mean scores; ``relaxed`` the rules dropped to find one."""

    direction: Direction
    layer: int
    table: pd.DataFrame
    baseline: dict = field(default_factory=dict)
    relaxed: list[str] = field(default_factory=list)


def refusal_addition(direction: Vectors, layer: int, coeff: float = 1.0, positions: Positions = "all") -> Steering:
    """Add ``coeff * r`` at ``resid_pre`` of ``layer`` only (``coeff=1`` induces, ``-1`` removes)."""
    vector = direction[layer] if hasattr(direction, "layers") else direction
    steering = Steering([Add(vector, alpha=coeff, layers=[int(layer)], site="resid_pre", positions=positions)])
    return stamp(steering, "refusal_addition", direction, coeff=float(coeff), layers=[int(layer)], site="resid_pre")


def choose_candidate(table: pd.DataFrame, n_layers: int, max_layer_frac: float = 0.8,
                     kl_max: float = 0.1) -> tuple[int, list[str], pd.Series]:
    """Apply the selection rule to a table with columns ``layer, bypass, induce, kl``.

    Returns the chosen layer, the rules relaxed to find one (``"kl"``, ``"induce"``) and the
    per-row eligibility under the rules finally used.
    """
    if table.empty:
        raise DataError("no candidate directions to choose from")
    shallow = table["layer"] < max_layer_frac * n_layers
    if not shallow.any():
        raise SteerlabError(f"every candidate is at or beyond {max_layer_frac:.0%} of the model's depth; "
                            "give candidates at earlier layers")
    rules = {"kl": table["kl"] <= kl_max, "induce": table["induce"] >= 0}
    relaxed: list[str] = []
    for drop in ([], ["kl"], ["kl", "induce"]):
        eligible = shallow.copy()
        for name, ok in rules.items():
            if name not in drop:
                eligible &= ok
        if eligible.any():
            relaxed = drop
            break
    best = table.loc[eligible, "bypass"].idxmin()
    return int(table.loc[best, "layer"]), relaxed, eligible


def select_direction(model: Model, candidates: Direction, positive_val: list[str], negative_val: list[str],
                     score: LogitScore, max_layer_frac: float = 0.8, kl_max: float = 0.1,
                     batch_size: int = 32) -> Selection:
    """Score every candidate (module docstring) and pick one; ``score`` is a ``LogitScore``.

    ``candidates``: raw ``resid_pre`` mean differences, one per layer (e.g. ``mean_diff`` with
    ``site="resid_pre"``). Layers at or beyond ``max_layer_frac`` of the depth, and zero
    candidates, are not evaluated.
    """
    if not positive_val or not negative_val:
        raise DataError("select_direction needs validation texts on both sides")
    largest = max(float(candidates[layer].norm()) for layer in candidates.layers)
    layers = [layer for layer in candidates.layers if layer < max_layer_frac * model.n_layers
              and float(candidates[layer].norm()) > 1e-6 * largest]   # e.g. resid_pre 0 when every text ends alike
    if not layers:
        raise SteerlabError(f"no candidate layer is below {max_layer_frac:.0%} of the depth ({model.n_layers} layers)")
    texts: list[str] = []
    recipes: list[Steering] = []
    slots: list[tuple[int, str]] = []
    for layer in layers:
        ablate = directional_ablation(candidates[layer])
        add = refusal_addition(candidates, layer, 1.0)
        for kind, rows, recipe in (("bypass", positive_val, ablate), ("kl", negative_val, ablate),
                                   ("induce", negative_val, add)):
            texts.extend(rows)
            recipes.extend([recipe] * len(rows))
            slots.extend([(layer, kind)] * len(rows))
    clean_pos = score(model.logits(positive_val, chat=score.chat, batch_size=batch_size, progress=False))
    clean_neg_logits = model.logits(negative_val, chat=score.chat, batch_size=batch_size, progress=False)
    logits = model.logits(texts, steering=recipes, chat=score.chat, batch_size=batch_size)
    values = score(logits)
    clean_logp = torch.log_softmax(clean_neg_logits.float(), -1)
    scored = []
    for layer in layers:
        pick = {kind: torch.tensor([s == (layer, kind) for s in slots]) for kind in ("bypass", "kl", "induce")}
        steered_logp = torch.log_softmax(logits[pick["kl"]].float(), -1)
        kl = (clean_logp.exp() * (clean_logp - steered_logp)).sum(-1).mean()
        scored.append({"layer": layer, "bypass": float(values[pick["bypass"]].mean()),
                     "induce": float(values[pick["induce"]].mean()), "kl": float(kl)})
    table = pd.DataFrame(scored)
    chosen, relaxed, eligible = choose_candidate(table, model.n_layers, max_layer_frac, kl_max)
    table["eligible"] = eligible.values
    baseline = {"positive": float(clean_pos.mean()), "negative": float(score(clean_neg_logits).mean())}
    direction = Direction({chosen: candidates[chosen]}, meta={**candidates.meta, "selected_layer": chosen,
                                                             "selection_score": score.name})
    return Selection(direction, chosen, table[COLUMNS], baseline, relaxed)
