"""Probe maps: score every layer × token position with a linear probe, and the refusal-cliff trace.

A probe is a logistic-regression read-out ``sigmoid(w·h + b)`` of a hidden state.
Fit it on one layer's last-token states of a contrastive set (positive = label 1), then apply it
to every position of new texts, generated continuations included, to see where and when the
concept is present. ``probe_trace`` tail-aligns the per-position scores, averages them over a
data set and resamples the curve (the RefusalCliff trace).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from ..errors import DataError, SteerlabError
from ..models.tokens import chat_prompt, check_texts
from ..sites import normalize_layers
from ._common import token_ids, token_labels

COLUMNS = ["text", "layer", "position", "tail", "token", "generated", "score", "prob"]


@dataclass
class Probe:
    """A linear probe per layer: ``weights[layer]`` ``[d]`` and ``biases[layer]``; ``layer`` is the one it was fit on.

    At a layer it holds no weights for, the probe of ``layer`` is used (a probe read across depths).
    """

    weights: dict[int, torch.Tensor]
    biases: dict[int, float]
    layer: int
    site: str = "resid_post"
    meta: dict = field(default_factory=dict)

    def at(self, layer: int) -> tuple[torch.Tensor, float]:
        """The (weight, bias) used at ``layer``."""
        key = layer if layer in self.weights else self.layer
        return self.weights[key], self.biases[key]

    def score(self, h: torch.Tensor, layer: int | None = None) -> torch.Tensor:
        """The probe's logit ``w·h + b`` of states ``[..., d]``."""
        w, b = self.at(self.layer if layer is None else layer)
        return h.float() @ w.float() + b

    def prob(self, h: torch.Tensor, layer: int | None = None) -> torch.Tensor:
        """``sigmoid(w·h + b)``: the probe's probability of the positive class."""
        return torch.sigmoid(self.score(h, layer))


def as_probe(probe, layer: int | None = None, site: str = "resid_post") -> Probe:
    """Accept a ``Probe``, a ``Direction`` (bias from ``meta["intercepts"][layer]`` or ``meta["intercept"]``,
    else 0) or a ``(weight, bias)`` pair (then ``layer`` names where it was fit)."""
    if isinstance(probe, Probe):
        return probe
    if isinstance(probe, tuple) and len(probe) == 2:
        w = torch.as_tensor(probe[0], dtype=torch.float32).flatten()
        fit = 0 if layer is None else int(layer)
        return Probe({fit: w}, {fit: float(probe[1])}, fit, site, {"method": "given"})
    if hasattr(probe, "layers") and hasattr(probe, "meta"):
        meta = probe.meta or {}
        intercepts = meta.get("intercepts") or {}
        weights = {int(l): probe[l].float() for l in probe.layers}
        biases = {l: float(intercepts.get(l, intercepts.get(str(l), meta.get("intercept", 0.0)))) for l in weights}
        fit = int(layer) if layer is not None else int(meta.get("layer", probe.layers[0]))
        if fit not in weights:
            raise SteerlabError(f"layer={fit} is not held by this direction; it holds layers {probe.layers}")
        return Probe(weights, biases, fit, meta.get("site", site), dict(meta))
    raise SteerlabError(f"probe must be a Probe, a Direction or a (weight, bias) pair, got {type(probe).__name__}")


def fit_probe(model, pairs, layers=-1, site: str = "resid_post", C: float = 1.0, chat: bool = False,
              batch_size: int = 16, progress: bool | None = None) -> Probe:
    """Fit a logistic-regression probe (positive = 1) on last-token states of ``pairs`` at each of ``layers``.

    ``pairs`` is a ``ContrastiveSet`` (or anything with ``.positive``/``.negative``). Features are
    standardised for the fit and the scaling folded back, so the probe reads raw activations.
    The first listed layer (the last one for ``"all"``) is the probe's own ``layer``; ``meta["train_accuracy"]`` holds each fit's accuracy.
    """
    from sklearn.linear_model import LogisticRegression

    pos, neg = check_texts(getattr(pairs, "positive", None) or [], "pairs.positive"), \
        check_texts(getattr(pairs, "negative", None) or [], "pairs.negative")
    if len(pos) < 2 or len(neg) < 2:
        raise DataError("fit_probe needs at least 2 positive and 2 negative texts")
    layer_list = normalize_layers(layers, model.n_layers)
    first = layer_list[-1] if layers is None or isinstance(layers, str) else \
        normalize_layers([layers] if isinstance(layers, int) else [list(layers)[0]], model.n_layers)[0]
    acts = model.capture(pos + neg, sites=site, layers=layer_list, positions="last", chat=chat,
                         batch_size=batch_size, progress=progress)
    y = np.array([1] * len(pos) + [0] * len(neg))
    weights, biases, accuracy = {}, {}, {}
    for layer in layer_list:
        x = acts[f"layers.{layer}.{site}"].double().numpy()
        mu, sd = x.mean(0), x.std(0) + 1e-6
        clf = LogisticRegression(C=C, max_iter=2000).fit((x - mu) / sd, y)
        w = clf.coef_[0] / sd
        weights[layer] = torch.tensor(w, dtype=torch.float32)
        biases[layer] = float(clf.intercept_[0] - (w * mu).sum())
        accuracy[layer] = float(clf.score((x - mu) / sd, y))
    meta = {"method": "logistic_regression", "C": C, "train_accuracy": accuracy,
            "dataset": getattr(pairs, "name", "custom"), "n": len(y)}
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
