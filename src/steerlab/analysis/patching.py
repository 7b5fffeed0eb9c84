"""Activation patching: which sites, layers and token positions carry the difference between two runs.

For each clean/corrupted pair (same token length), the clean run's activation at one
(site, layer, position) is written into the corrupted run (``mode="denoise"``: does it restore
the clean answer?) or the corrupted run's into the clean run (``"noise"``: does it break it?).
Every patch is one row of a batch with its own recipe, so a sweep runs in a few batched forwards.
"""

from __future__ import annotations

import pandas as pd
import torch

from ..errors import SteerlabError
from ..interventions import Patch
from ..sites import LAYER_KINDS, normalize_layers
from ._common import check_same_length, make_metric, pairs_of, parse_positions, token_labels

MODES = ("denoise", "noise")
COLUMNS = ["pair", "mode", "site", "layer", "position", "token", "other_token", "metric", "clean_metric",
           "corrupted_metric", "effect", "normalized"]


def patched_logits(model, texts: list[str], recipes: list, chat: bool = False, batch_size: int = 16,
                   progress: bool | None = None) -> torch.Tensor:
    """Next-token logits of ``texts[i]`` under ``recipes[i]``, all rows batched (``[n, vocab]``)."""
    return model.logits(texts, steering=recipes, chat=chat, batch_size=batch_size, progress=progress)


def _site_kinds(sites) -> list[str]:
    kinds = [sites] if isinstance(sites, str) else list(sites)
    if not kinds:
        raise SteerlabError("sites is empty; give at least one site kind such as 'resid_post'")
    for kind in kinds:
        if kind not in LAYER_KINDS:
            raise SteerlabError(f"site {kind!r} cannot be swept; use per-layer kinds: {', '.join(LAYER_KINDS)}")
    return kinds


def activation_patching(model, clean, corrupted, answers=None, gold=None, sites="resid_post", layers=None,
                        positions="all", mode: str = "denoise", chat: bool = False, batch_size: int = 32,
                        progress: bool | None = None) -> pd.DataFrame:
    """Patch one (site, layer, position) at a time between clean and corrupted runs and measure a metric.

    ``answers=(a, b)`` scores ``logit(a) − logit(b)`` (a = the clean answer); ``gold=a`` scores
    ``log p(a)``. ``mode``: ``"denoise"`` (clean into corrupted), ``"noise"`` (corrupted into clean)
    or ``"both"``. Returns one row per (pair, mode, site, layer, position) with the patched
    ``metric``, both baselines, ``effect`` (patched − unpatched run) and ``normalized``
    ``(metric − corrupted) / (clean − corrupted)``: 1 behaves like the clean run, 0 like the corrupted.
    """
    clean, corrupted = pairs_of(clean, corrupted)
    modes = list(MODES) if mode == "both" else [mode]
    if any(m not in MODES for m in modes):
        raise SteerlabError(f"mode={mode!r} is not allowed; use 'denoise', 'noise' or 'both'")
    kinds = _site_kinds(sites)
    layer_list = normalize_layers(layers, model.n_layers)
    n = len(clean)
    metric = make_metric(model.tokenizer, n, answers, gold)
    ids_clean, ids_corrupt = check_same_length(model, clean, corrupted, chat)
    base = model.logits(clean + corrupted, chat=chat, batch_size=batch_size, progress=False)
    rows_idx = torch.arange(n)
    m_clean = metric(base[:n], rows_idx)
    m_corrupt = metric(base[n:], rows_idx)
    acts = {"clean": model.capture(clean, sites=kinds, layers=layer_list, positions="all", chat=chat,
                                   batch_size=batch_size, progress=False),
            "corrupted": model.capture(corrupted, sites=kinds, layers=layer_list, positions="all", chat=chat,
                                       batch_size=batch_size, progress=False)}
    jobs, texts, recipes = [], [], []
    for i in range(n):
        pos_list = parse_positions(positions, len(ids_clean[i]))
        for m in modes:
            source, target_text = ("clean", corrupted[i]) if m == "denoise" else ("corrupted", clean[i])
            for kind in kinds:
                for layer in layer_list:
                    value = acts[source][f"layers.{layer}.{kind}"][i]
                    for p in pos_list:
                        jobs.append((i, m, kind, layer, p))
                        texts.append(target_text)
                        recipes.append(Patch(value[p].flatten(), layers=[layer], site=kind, positions=[p]))
    logits = patched_logits(model, texts, recipes, chat, batch_size, progress)
    values = metric(logits, torch.tensor([j[0] for j in jobs]))
    return _table(model, jobs, values, m_clean, m_corrupt, ids_clean, ids_corrupt)


def _table(model, jobs, values, m_clean, m_corrupt, ids_clean, ids_corrupt) -> pd.DataFrame:
    labels = {}
    rows = []
    for (i, m, kind, layer, p), value in zip(jobs, values.tolist()):
        if i not in labels:
            labels[i] = (token_labels(model.tokenizer, ids_clean[i]), token_labels(model.tokenizer, ids_corrupt[i]))
        c, k = float(m_clean[i]), float(m_corrupt[i])
        unpatched = k if m == "denoise" else c
        span = c - k
        rows.append({"pair": i, "mode": m, "site": kind, "layer": layer, "position": p, "token": labels[i][0][p],
                     "other_token": labels[i][1][p], "metric": value, "clean_metric": c, "corrupted_metric": k,
                     "effect": value - unpatched,
                     "normalized": (value - k) / span if abs(span) > 1e-9 else float("nan")})
    return pd.DataFrame(rows, columns=COLUMNS)


def patching_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Mean ``effect`` and ``normalized`` over pairs for each (mode, site, layer, position)."""
    keys = ["mode", "site", "layer", "position"]
    out = table.groupby(keys, sort=True).agg(effect=("effect", "mean"), normalized=("normalized", "mean"),
                                            pairs=("pair", "nunique")).reset_index()
    return out
