"""The refusal direction as Arditi et al. select it: every post-instruction token x every layer.

Candidates ``r_{i,l} = mean_harmful(resid_pre_l[i]) - mean_harmless(resid_pre_l[i])`` (float64 means,
sides of any size) at each chat-template token ``i`` after the instruction (``template.py``) and
each layer ``l``. Each is scored on validation prompts: ``bypass`` (harmful, ``r̂`` ablated
everywhere), ``induce`` (harmless, ``r`` added at ``resid_pre`` of ``l``) and ``kl`` (harmless,
clean vs ablated next-token distributions); ``refusal.filter_candidates`` applies the rules.
Candidates are scored in batches of rows, each row with its own recipe, so one forward pass
serves many candidates.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch

from ..directions import Direction
from ..directions.estimators import mean_diff_from
from ..errors import DataError
from ..interventions import Steering
from ..io import short_hash
from ..models import Model
from ..progress import bar
from ..sites import normalize_layers
from .ablation import directional_ablation
from .refusal import RefusalSelectionWarning, choose_row, refusal_addition, relaxed_message
from .scores import LogitScore
from .template import post_instruction

COLUMNS = ["position", "token", "layer", "bypass", "induce", "kl", "norm", "eligible", "chosen"]


@dataclass
class Candidates:
    """Raw candidate vectors ``[n_positions, n_layers, d]`` at ``positions`` (from the prompt's end) x ``layers``."""

    vectors: torch.Tensor
    positions: list[int]
    layers: list[int]
    tokens: list[str] = field(default_factory=list)

    def __getitem__(self, key: tuple[int, int]) -> torch.Tensor:
        position, layer = key
        return self.vectors[self.positions.index(position), self.layers.index(layer)]


@dataclass
class RefusalSelection:
    """The chosen candidate and how it was chosen.

    ``direction`` holds the raw ``r`` at ``layer`` (its ``meta`` keeps the whole ``table``, the rules,
    the relaxed rules and any warning); ``position`` is the template token it was read at.
    ``baseline``: mean clean refusal scores of the validation prompts; ``seconds``: scoring time.
    """

    direction: Direction
    layer: int
    position: int
    table: pd.DataFrame
    baseline: dict[str, float]
    relaxed: list[str]
    warning: str | None
    seconds: float


def candidate_directions(model: Model, harmful: Sequence[str], harmless: Sequence[str],
                         positions: Sequence[int] | None = None, layers: Sequence[int] | None = None,
                         batch_size: int = 32, progress: bool | None = None) -> Candidates:
    """Mean differences at ``resid_pre`` for every position x layer, from one capture of both sides.

    Prompts are chat-templated; ``positions`` default to the template's post-instruction tokens.
    """
    if not harmful or not harmless:
        raise DataError("candidate_directions needs harmful and harmless prompts (at least one of each)")
    info = post_instruction(model.tokenizer)
    wanted = info.positions if positions is None else [int(p) for p in positions]
    tokens = [info.tokens[info.positions.index(p)] if p in info.positions else "" for p in wanted]
    layer_list = normalize_layers(list(layers) if layers is not None else None, model.n_layers)
    acts = model.capture(list(harmful) + list(harmless), sites="resid_pre", layers=layer_list, positions=wanted,
                         chat=True, batch_size=batch_size, progress=progress)
    stacked = torch.stack([torch.as_tensor(acts[f"layers.{layer}.resid_pre"]) for layer in layer_list], 2)  # [n,k,L,d]
    n, k, n_layers, d = stacked.shape
    flat = stacked.reshape(n, k * n_layers, d)
    vectors = mean_diff_from(flat[:len(harmful)], flat[len(harmful):]).reshape(k, n_layers, d)
    return Candidates(vectors.float(), wanted, layer_list, tokens)


def _kl(clean: torch.Tensor, steered: torch.Tensor) -> float:
    """Mean ``KL(clean ‖ steered)`` of next-token distributions given as logits ``[n, vocab]``."""
    p, q = torch.log_softmax(clean.float(), -1), torch.log_softmax(steered.float(), -1)
    return float((p.exp() * (p - q)).sum(-1).mean())


def score_candidates(model: Model, candidates: Candidates, harmful_val: Sequence[str], harmless_val: Sequence[str],
                     score: LogitScore, max_layer_frac: float = 0.8, batch_size: int = 32,
                     progress: bool | None = None) -> tuple[pd.DataFrame, dict[str, float]]:
    """Bypass, induce and KL of every candidate shallower than ``int(max_layer_frac * n_layers)``.

    Returns the table (deeper or all-zero candidates have NaN scores) and the clean baseline scores.
    """
    harmful_val, harmless_val = list(harmful_val), list(harmless_val)
    if not harmful_val or not harmless_val:
        raise DataError("scoring refusal candidates needs harmful and harmless validation prompts")
    cutoff = int(max_layer_frac * model.n_layers)
    largest = float(candidates.vectors.norm(dim=-1).max())
    rows: list[dict[str, Any]] = []
    todo: list[dict[str, Any]] = []
    for i, position in enumerate(candidates.positions):
        for j, layer in enumerate(candidates.layers):
            norm = float(candidates.vectors[i, j].norm())
            row: dict[str, Any] = {"position": position, "token": candidates.tokens[i] if candidates.tokens else "",
                   "layer": layer, "bypass": float("nan"), "induce": float("nan"), "kl": float("nan"), "norm": norm}
            rows.append(row)
            if layer < cutoff and norm > 1e-6 * largest:   # e.g. layer 0 at template tokens: the same embedding
                todo.append(row)
    clean_harmful = model.logits(harmful_val, chat=True, batch_size=batch_size, progress=False)
    clean_harmless = model.logits(harmless_val, chat=True, batch_size=batch_size, progress=False)
    per = len(harmful_val) + 2 * len(harmless_val)
    chunk = max(1, (4 * batch_size) // per)
    with bar("refusal candidates", len(todo), progress) as advance:
        for begin in range(0, len(todo), chunk):
            group = todo[begin:begin + chunk]
            texts: list[str] = []
            recipes: list[Steering] = []
            for row in group:
                r = candidates[row["position"], row["layer"]]
                ablate, add = directional_ablation(r), refusal_addition(r, row["layer"], 1.0)
                texts += harmful_val + harmless_val + harmless_val
                recipes += [ablate] * (len(harmful_val) + len(harmless_val)) + [add] * len(harmless_val)
            logits = model.logits(texts, steering=recipes, chat=True, batch_size=batch_size, progress=False)
            for g, row in enumerate(group):
                part = logits[g * per:(g + 1) * per]
                bypass, ablated, added = part.split([len(harmful_val), len(harmless_val), len(harmless_val)])
                row.update(bypass=float(score(bypass).mean()), induce=float(score(added).mean()),
                           kl=_kl(clean_harmless, ablated))
            advance(len(group))
    baseline = {"harmful": float(score(clean_harmful).mean()), "harmless": float(score(clean_harmless).mean())}
    return pd.DataFrame(rows), baseline


def keep_by_score(model: Model, harmful: Sequence[str], harmless: Sequence[str], score: LogitScore,
                  batch_size: int = 32, least: int = 2) -> tuple[list[str], list[str], dict[str, Any]]:
    """The paper's training filter: harmful prompts the model scores as refusing (``> 0``) and harmless
    ones it scores as not refusing (``< 0``). A side left with fewer than ``least`` prompts is kept whole
    (and reported), so a model that rarely refuses still gets candidates."""
    kept: list[list[str]] = []
    info: dict[str, Any] = {}
    for name, texts, sign in (("harmful", list(harmful), 1.0), ("harmless", list(harmless), -1.0)):
        values = score(model.logits(texts, chat=True, batch_size=batch_size, progress=False))
        keep = [t for t, v in zip(texts, values.tolist()) if sign * v > 0]
        info[name] = {"given": len(texts), "passing": len(keep), "filtered": len(keep) >= least}
        kept.append(keep if len(keep) >= least else texts)
    return kept[0], kept[1], info


def select_refusal_direction(model: Model, harmful_train: Sequence[str], harmless_train: Sequence[str],
                             harmful_val: Sequence[str], harmless_val: Sequence[str], score: LogitScore,
                             positions: Sequence[int] | None = None, layers: Sequence[int] | None = None,
                             max_layer_frac: float = 0.8, kl_max: float = 0.1, filter_train: bool = True,
                             batch_size: int = 32, progress: bool | None = None) -> RefusalSelection:
    """Build every position x layer candidate on the training prompts and choose one on the validation prompts.

    ``score``: the refusal ``LogitScore`` (``sl.evaluate.refusal_starts(...).score`` takes its tokens
    from the model's own refusals). ``filter_train``: keep only training prompts the model scores on
    the expected side first (``keep_by_score``). When no candidate meets every rule, the failing rule
    is relaxed, a ``RefusalSelectionWarning`` is raised as a warning and the message is kept in
    ``warning`` and in the direction's metadata.
    """
    started = time.perf_counter()
    used = list(harmful_train) + list(harmless_train) + list(harmful_val) + list(harmless_val)
    filtered: dict[str, Any] = {}
    if filter_train:
        harmful_train, harmless_train, filtered = keep_by_score(model, harmful_train, harmless_train, score,
                                                                batch_size)
    candidates = candidate_directions(model, harmful_train, harmless_train, positions, layers, batch_size, progress)
    table, baseline = score_candidates(model, candidates, harmful_val, harmless_val, score, max_layer_frac,
                                       batch_size, progress)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RefusalSelectionWarning)
        row, relaxed, eligible = choose_row(table, model.n_layers, max_layer_frac, kl_max)
    warning = relaxed_message(table, relaxed, model.n_layers, max_layer_frac, kl_max) if relaxed else None
    if warning:
        warnings.warn(RefusalSelectionWarning(warning), stacklevel=2)
    table["eligible"] = eligible.values
    table["chosen"] = table.index == row
    table = table[COLUMNS]
    layer, position = int(table.loc[row, "layer"]), int(table.loc[row, "position"])
    seconds = time.perf_counter() - started
    meta = {"model": dict(model.fingerprint), "site": "resid_pre", "method": "refusal_direction",
            "positions": position, "chat": True, "selected_layer": layer, "selected_position": position,
            "selected_token": str(table.loc[row, "token"]),
            "rules": {"max_layer_frac": max_layer_frac, "kl_max": kl_max, "order": ["depth", "kl", "induce"]},
            "relaxed": relaxed, "warning": warning, "baseline_scores": baseline,
            "score": {"name": score.name, "token_ids": list(score.positive_ids),
                      "tokens": [model.tokenizer.decode([i]) for i in score.positive_ids]},
            "train_filter": filtered, "dataset": {"name": "refusal prompts", "hash": short_hash(t.encode() for t in used),
                                                  "harmful_train": len(harmful_train),
                                                  "harmless_train": len(harmless_train),
                                                  "harmful_val": len(harmful_val), "harmless_val": len(harmless_val)},
            "used_prompts": used, "seconds": round(seconds, 2),
            "candidates": table.round(5).to_dict("records")}
    direction = Direction({layer: candidates[position, layer]}, meta=meta)
    return RefusalSelection(direction, layer, position, table, baseline, relaxed, warning, seconds)
