"""Refusal-style direction selection and addition (Arditi et al.).

Candidates are the raw mean differences ``r_l`` of the pairs at each layer's ``resid_pre`` (last
token). Each is scored on validation pairs the training direction never saw:

- ``bypass``: the mean behaviour score of the *positive* texts with ``r̂_l`` ablated everywhere;
- ``induce``: the mean score of the *negative* texts with ``r_l`` added at ``resid_pre`` of layer ``l``;
- ``kl``: KL(clean ‖ ablated) of the negative texts' next-token distributions.

Candidates at ``l >= int(0.8 L)`` are discarded; then, in the paper's order, those with ``kl > 0.1``
and those with ``induce < 0``; the lowest ``bypass`` wins. A rule that no remaining candidate meets
is relaxed, and only that rule (recorded in ``Selection.relaxed``, with a ``RefusalSelectionWarning``
that shows the best few candidates). The chosen ``r_l`` is then added at ``resid_pre`` of ``l``.
This module scores the last token's candidates; ``refusal_direction`` scores every post-instruction
token of the chat template, as the paper does.
"""

from __future__ import annotations

import warnings
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


class RefusalSelectionWarning(UserWarning):
    """No candidate direction met every rule of the selection, so some rule was relaxed."""


#: The rules after the depth rule, in the paper's order: (column, what passing means).
RULES = (("kl", "kl <= kl_max"), ("induce", "induce >= 0"))


def filter_candidates(table: pd.DataFrame, n_layers: int, max_layer_frac: float = 0.8,
                      kl_max: float = 0.1) -> tuple[pd.Series, list[str]]:
    """Per-row eligibility under Arditi et al.'s rules, and the rules relaxed to leave any candidate.

    Depth (``layer < int(max_layer_frac * n_layers)``) and finite scores are never relaxed. Then, in
    order, KL and induce: a rule that no still-eligible candidate meets is dropped (and named in
    the returned list); one that some candidate meets is kept.
    """
    if table.empty:
        raise DataError("no candidate directions to choose from")
    cutoff = int(n_layers * max_layer_frac)
    eligible = (table["layer"] < cutoff) & table[["bypass", "induce", "kl"]].notna().all(axis=1)
    if not eligible.any():
        raise SteerlabError(f"every candidate is at or beyond layer {cutoff} ({max_layer_frac:.0%} of the "
                            f"model's {n_layers} layers) or has no score; give candidates at earlier layers")
    passes = {"kl": table["kl"] <= kl_max, "induce": table["induce"] >= 0}
    relaxed: list[str] = []
    for name, _ in RULES:
        if (eligible & passes[name]).any():
            eligible = eligible & passes[name]
        else:
            relaxed.append(name)
    return eligible, relaxed


def relaxed_message(table: pd.DataFrame, relaxed: list[str], n_layers: int, max_layer_frac: float = 0.8,
                    kl_max: float = 0.1, show: int = 3) -> str:
    """One loud line: which rules no candidate met, and the best few candidates with their scores."""
    rules = dict(RULES)
    scored = (table["layer"] < int(n_layers * max_layer_frac)) & table[["bypass", "induce", "kl"]].notna().all(axis=1)
    shallow = table[scored].sort_values("bypass")
    cols = [c for c in ("position", "layer", "bypass", "induce", "kl") if c in table]
    best = "; ".join(", ".join(f"{c}={row[c]:.3g}" if isinstance(row[c], float) else f"{c}={row[c]}" for c in cols)
                     for _, row in shallow.head(show).iterrows())
    names = " and ".join(rules[r].replace("kl_max", f"{kl_max:g}") for r in relaxed)
    return (f"no candidate direction passes the refusal-direction rules: none has {names} (of {len(shallow)} "
            f"scored candidates above the depth limit), so {'that rule was' if len(relaxed) == 1 else 'those rules were'} "
            f"relaxed; best by bypass: {best}")


def choose_candidate(table: pd.DataFrame, n_layers: int, max_layer_frac: float = 0.8,
                     kl_max: float = 0.1) -> tuple[int, list[str], pd.Series]:
    """Apply the selection rule to a table with columns ``layer, bypass, induce, kl``.

    Returns the chosen layer, the rules relaxed to find one (``"kl"``, ``"induce"``; see
    ``filter_candidates``) and the per-row eligibility under the rules finally used. Relaxing warns
    (``RefusalSelectionWarning``) with the best few candidates.
    """
    row, relaxed, eligible = choose_row(table, n_layers, max_layer_frac, kl_max)
    return int(table.loc[row, "layer"]), relaxed, eligible


def choose_row(table: pd.DataFrame, n_layers: int, max_layer_frac: float = 0.8,
               kl_max: float = 0.1) -> tuple[object, list[str], pd.Series]:
    """Like ``choose_candidate`` but returns the chosen row's index label (for position x layer tables)."""
    eligible, relaxed = filter_candidates(table, n_layers, max_layer_frac, kl_max)
    if relaxed:
        warnings.warn(RefusalSelectionWarning(relaxed_message(table, relaxed, n_layers, max_layer_frac, kl_max)),
                      stacklevel=3)
    return table.loc[eligible, "bypass"].idxmin(), relaxed, eligible


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
    layers = [layer for layer in candidates.layers if layer < int(max_layer_frac * model.n_layers)
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
