"""Truth stability: how far a true/not-true probe's decision boundary moves when "neither" statements change side.

After "Representational Stability of Truth": a linear probe separates true statements from the rest.
Statements that are neither true nor false (fiction, opinions, unknowables) have no right side, so
the probe is fit twice at each layer, on the same training statements:

- probe A: ``true`` vs ``false + neither`` (neither counted as not-true);
- probe B: ``true + neither`` vs ``false`` (neither relabelled as true).

The **flip rate** is the share of held-out true and false statements on which A and B decide
differently: 0 means the boundary between true and false does not depend on where "neither" goes (a
stable truth representation); large values mean "neither" statements sit on the boundary and drag it.
Held-out accuracy (probe A, true vs false) says whether the layer encodes truth at all.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd
import torch

from ..data.statements import LABELS, truth_statements
from ..directions.estimators import probe_from
from ..errors import DataError
from ..sites import normalize_layers


@dataclass
class TruthStability:
    """``table``: one row per layer (``accuracy``, ``accuracy_b``, ``flip_rate``, ``flip_rate_neither``,
    ``cosine`` between the two probes' weights, counts); ``split``: the statements of each side."""

    table: pd.DataFrame
    split: dict[str, dict[str, list[str]]]


def split_statements(statements: Mapping[str, Sequence[str]], test: float = 0.3,
                     seed: int = 0) -> dict[str, dict[str, list[str]]]:
    """``{"train"|"test": {label: [...]}}``. True and false share one shuffled index order, so a matched pair
    (line ``i`` of each) lands on the same side; ``neither`` is split on its own."""
    for label in LABELS:
        if len(statements.get(label, [])) < 4:
            raise DataError(f"statements[{label!r}] needs at least 4 statements, got {len(statements.get(label, []))}")
    if not 0 < test < 1:
        raise DataError(f"test={test} must be between 0 and 1")
    out: dict[str, dict[str, list[str]]] = {"train": {}, "test": {}}
    n_pairs = min(len(statements["true"]), len(statements["false"]))
    orders = {"pairs": list(range(n_pairs)), "neither": list(range(len(statements["neither"])))}
    for order in orders.values():
        random.Random(seed).shuffle(order)
    for label in LABELS:
        order = orders["neither" if label == "neither" else "pairs"]
        items = list(statements[label])
        cut = max(1, round(len(order) * test))
        out["test"][label] = [items[i] for i in order[:cut]]
        out["train"][label] = [items[i] for i in order[cut:]] + \
            ([items[i] for i in range(n_pairs, len(items))] if label != "neither" else [])
    return out


def stability_from_activations(train: Mapping[str, torch.Tensor], test: Mapping[str, torch.Tensor],
                               layers: Sequence[int], C: float = 1.0) -> pd.DataFrame:
    """The per-layer table from activations ``{label: [n, L, d]}`` of the train and test statements
    (``layers`` names the L columns)."""
    t, f, nei = (train[k].float() for k in LABELS)
    fit_a = probe_from(t, torch.cat([f, nei]), test=0, C=C)
    fit_b = probe_from(torch.cat([t, nei]), f, test=0, C=C)
    rows = []
    for j, layer in enumerate(layers):
        wa, ba = fit_a.coef[j].float(), float(fit_a.intercept[j])
        wb, bb = fit_b.coef[j].float(), float(fit_b.intercept[j])

        def decide(x, w, b, j=j):
            return (x[:, j].float() @ w + b) > 0

        tf = torch.cat([test["true"], test["false"]])
        truth = torch.cat([torch.ones(len(test["true"])), torch.zeros(len(test["false"]))]).bool()
        da, db = decide(tf, wa, ba), decide(tf, wb, bb)
        na, nb = decide(test["neither"], wa, ba), decide(test["neither"], wb, bb)
        rows.append({"layer": layer, "accuracy": float((da == truth).float().mean()),
                     "accuracy_b": float((db == truth).float().mean()),
                     "flip_rate": float((da != db).float().mean()),
                     "flip_rate_neither": float((na != nb).float().mean()),
                     "neither_true_a": float(na.float().mean()), "neither_true_b": float(nb.float().mean()),
                     "cosine": float(wa @ wb / (wa.norm() * wb.norm()).clamp_min(1e-12)),
                     "n_train": sum(len(v) for v in train.values()), "n_test_tf": len(tf),
                     "n_test_neither": len(test["neither"])})
    return pd.DataFrame(rows)


def truth_stability(model, statements: Mapping[str, Sequence[str]] | None = None, layers=None, test: float = 0.3,
                    seed: int = 0, C: float = 1.0, template: str = "{statement}", batch_size: int = 16,
                    progress: bool | None = None) -> TruthStability:
    """Fit probes A and B at each of ``layers`` on last-token ``resid_post`` states of the training statements and
    report held-out accuracy and the flip rate (see the module docstring).

    ``statements``: ``{"true": [...], "false": [...], "neither": [...]}`` (default: the bundled set, 48 each);
    ``template`` wraps each statement (``"{statement}"`` as written).
    """
    statements = statements or truth_statements()
    if "{statement}" not in template:
        raise DataError(f"template={template!r} must contain {{statement}}")
    split = split_statements(statements, test, seed)
    layer_list = normalize_layers(layers, model.n_layers)
    texts = [template.format(statement=s) for side in ("train", "test") for label in LABELS for s in split[side][label]]
    acts = model.capture(texts, sites="resid_post", layers=layer_list, positions="last", batch_size=batch_size,
                         progress=progress)
    x = torch.stack([acts[f"layers.{layer}.resid_post"] for layer in layer_list], dim=1)
    parts: dict[str, dict[str, torch.Tensor]] = {"train": {}, "test": {}}
    begin = 0
    for side in ("train", "test"):
        for label in LABELS:
            k = len(split[side][label])
            parts[side][label] = x[begin:begin + k]
            begin += k
    table = stability_from_activations(parts["train"], parts["test"], layer_list, C)
    return TruthStability(table, split)
