"""Probe maps: score every layer × token position with a linear probe, and the refusal-cliff trace.

A probe is a logistic-regression read-out ``sigmoid(w·h + b)`` of a hidden state (``sl.directions.Probe``).
Fit it on one layer's last-token states of a contrastive set (positive = label 1), then apply it
to every position of new texts, generated continuations included, to see where and when the
concept is present. ``probe_trace`` tail-aligns the per-position scores, averages them over a
data set and resamples the curve (the RefusalCliff trace).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..directions.estimators import probe_from
from ..directions.probe import Probe, as_probe
from ..errors import DataError, SteerlabError
from ..models.tokens import chat_prompt, check_texts
from ..sites import normalize_layers
from ._common import token_ids, token_labels

COLUMNS = ["text", "layer", "position", "tail", "token", "generated", "score", "prob"]


def fit_probe(model, pairs, layers=-1, site: str = "resid_post", C: float = 1.0, chat: bool = False,
              batch_size: int = 16, progress: bool | None = None) -> Probe:
    """Fit a logistic-regression probe (positive = 1) on last-token states of ``pairs`` at each of ``layers``.

    ``pairs`` is a ``ContrastiveSet`` (or anything with ``.positive``/``.negative``). Features are
    standardised for the fit and the scaling folded back, so the probe reads raw activations.
    The first listed layer (the last one for ``"all"``) is the probe's own ``layer``; ``meta["train_accuracy"]`` holds each fit's accuracy.
    """
    pos, neg = check_texts(getattr(pairs, "positive", None) or [], "pairs.positive"), \
        check_texts(getattr(pairs, "negative", None) or [], "pairs.negative")
    if len(pos) < 2 or len(neg) < 2:
        raise DataError("fit_probe needs at least 2 positive and 2 negative texts")
    layer_list = normalize_layers(layers, model.n_layers)
    first = layer_list[-1] if layers is None or isinstance(layers, str) else \
        normalize_layers([layers] if isinstance(layers, int) else [next(iter(layers))], model.n_layers)[0]
    acts = model.capture(pos + neg, sites=site, layers=layer_list, positions="last", chat=chat,
                         batch_size=batch_size, progress=progress)
    x = torch.stack([acts[f"layers.{layer}.{site}"] for layer in layer_list], dim=1)  # [n, L, d]
    fit = probe_from(x[: len(pos)], x[len(pos):], test=0, C=C)  # the one probe fit (directions.estimators)
    weights = {layer: fit.coef[j].float() for j, layer in enumerate(layer_list)}
    biases = {layer: float(fit.intercept[j]) for j, layer in enumerate(layer_list)}
    accuracy = {layer: float(fit.train_accuracy[j]) for j, layer in enumerate(layer_list)}
    meta = {"method": "logistic_regression", "C": C, "train_accuracy": accuracy,
            "dataset": getattr(pairs, "name", "custom"), "n": len(pos) + len(neg)}
    return Probe(weights, biases, first, site, meta)


def probe_map(model, texts, probe, layers=None, generate: int = 0, chat: bool = False, batch_size: int = 8,
              progress: bool | None = None) -> pd.DataFrame:
    """Score every layer × token position of ``texts`` with ``probe`` (see ``as_probe``).

    With ``generate=N`` each text is first continued greedily by up to N tokens and the whole
    sequence (prompt, chat-templated when ``chat``, plus continuation) is scored; ``generated``
    marks the continuation's positions. Returns one row per (text, layer, position) with the
    probe's logit ``score``, its ``prob`` and ``tail`` (position counted from the end: −1 is the last token).
    """
    texts = check_texts(texts)
    p = as_probe(probe)
    layer_list = normalize_layers(layers, model.n_layers)
    if generate:
        if not isinstance(generate, int) or generate < 0:
            raise SteerlabError(f"generate must be a non-negative integer, got {generate!r}")
        prompts = [chat_prompt(model.tokenizer, t) for t in texts] if chat else list(texts)
        out = model.generate(texts, max_new_tokens=generate, chat=chat)
        prompt_len = [len(ids) for ids in token_ids(model, prompts)]
        full = [a + b for a, b in zip(prompts, out.texts)]
        chat = False  # the template is already in ``full``
    else:
        full, prompt_len = texts, None
    ids = token_ids(model, full, chat)
    acts = model.capture(full, sites=p.site, layers=layer_list, positions="all", chat=chat, batch_size=batch_size,
                         progress=progress)
    parts = []
    for i, row_ids in enumerate(ids):
        labels = token_labels(model.tokenizer, row_ids)
        n = len(row_ids)
        start = n if prompt_len is None else prompt_len[i]
        positions = np.arange(n)
        for layer in layer_list:
            score = p.score(acts[f"layers.{layer}.{p.site}"][i], layer).numpy()
            parts.append(pd.DataFrame({"text": i, "layer": layer, "position": positions, "tail": positions - n,
                                       "token": labels, "generated": positions >= start, "score": score,
                                       "prob": 1.0 / (1.0 + np.exp(-score.astype(np.float64)))}))
    table = pd.concat(parts, ignore_index=True)[COLUMNS]
    table.attrs["probe_layer"] = p.layer
    return table


def probe_trace(table: pd.DataFrame, layer: int | None = None, value: str = "prob", window: int | None = None,
                n_points: int | None = 100) -> pd.DataFrame:
    """The RefusalCliff trace: tail-align each text's scores at ``layer``, average over texts, resample.

    ``window``: how many final positions to keep (default: the shortest text, so every text
    contributes to every point). When the window is longer than ``n_points``, the mean curve (and
    its band) is resampled to ``n_points`` evenly spaced points by cubic interpolation, so traces of
    long generations share one grid (``None`` keeps one point per position).
    Columns: ``point``, ``tail`` (position from the end, fractional after resampling), ``mean``,
    ``std``, ``sem``, ``lo``/``hi`` (mean ± 1.96·sem), ``n`` (texts) and ``generated`` (the share of
    texts whose token there was generated).
    """
    if table.empty:
        raise DataError("the probe-map table is empty")
    if value not in ("prob", "score"):
        raise SteerlabError(f"value={value!r} is not allowed; use 'prob' or 'score'")
    layer = table.attrs.get("probe_layer", int(table["layer"].max())) if layer is None else layer
    sub = table[table["layer"] == layer]
    if sub.empty:
        raise SteerlabError(f"layer={layer} is not in the table; it holds layers {sorted(table['layer'].unique())}")
    lengths = sub.groupby("text")["tail"].min().abs()
    window = int(lengths.min()) if window is None else int(window)
    if window < 1:
        raise SteerlabError(f"window must be at least 1, got {window}")
    grid = sub[sub["tail"] >= -window].pivot_table(index="text", columns="tail", values=value)
    tails = np.array(grid.columns, dtype=float)
    mean = grid.mean(axis=0).to_numpy()
    std = grid.std(axis=0, ddof=0).to_numpy()
    n = grid.notna().sum(axis=0).to_numpy()
    sem = std / np.sqrt(np.maximum(n, 1))
    generated = (sub[sub["tail"] >= -window].pivot_table(index="text", columns="tail", values="generated")
                 .mean(axis=0).reindex(grid.columns).to_numpy(dtype=float)) if "generated" in sub.columns \
        else np.zeros(len(tails))
    if n_points is not None and len(tails) > int(n_points):
        new = np.linspace(tails[0], tails[-1], int(n_points))
        mean, std, sem = (_resample(tails, y, new) for y in (mean, std, sem))
        n, generated = np.interp(new, tails, n), np.interp(new, tails, generated)
        tails = new
    return pd.DataFrame({"point": np.arange(len(tails)), "tail": tails, "mean": mean, "std": std, "sem": sem,
                         "lo": mean - 1.96 * sem, "hi": mean + 1.96 * sem, "n": n, "generated": generated})


def _resample(x: np.ndarray, y: np.ndarray, new: np.ndarray) -> np.ndarray:
    """Cubic interpolation where there are enough points (≥ 4), linear otherwise."""
    if len(x) >= 4:
        from scipy.interpolate import CubicSpline

        return CubicSpline(x, y)(new)
    return np.interp(new, x, y)
