"""Signals of a trace that predict whether its answer is right.

Latent-trajectory signals (Vilas et al., "Tracing the Traces"): with ``h_1..h_N`` the segment means
at one layer, steps ``s_n = h_{n+1} - h_n`` and drift ``D = h_N - h_1``:
Net Change ``||D|| / (N - 1)``, Cumulative Change ``sum_n ||s_n||``, Aligned Change
``mean_n cos(s_n, D)``; each computed per layer, then averaged over layers (unweighted). They need
two segments; a shorter trace gets NaN.

Confidence signals (Fu et al., "Deep Think with Confidence"): token confidence
``C_i = -mean_j log P_i(j)`` over the top-k candidates; group confidence is the mean token confidence
over a sliding window of ``window`` tokens (the whole trace when shorter); a trace is scored by its
lowest group, the mean of its bottom 10% of groups, or its last ``tail`` tokens.
The paper uses windows and tails of 2,048 tokens for traces of tens of thousands; the defaults here
(16) fit traces of 30-150 tokens.

``ORIENTATION`` says which way is "more likely correct": +1 higher, -1 lower.
"""

from __future__ import annotations

import math

import torch

from .traces import Trace

#: sliding-window size (tokens) of group confidence, and the tail length (tokens) of tail confidence
WINDOW = 16
TAIL = 16
#: share of the lowest groups averaged by the bottom-10% confidence
BOTTOM = 0.1
LT_SIGNALS = ("net_change", "cumulative_change", "aligned_change")
CONFIDENCE_SIGNALS = ("confidence", "lowest_group", "bottom_10", "tail")
SIGNALS = (*LT_SIGNALS, *CONFIDENCE_SIGNALS, "length")
ORIENTATION = {"net_change": 1, "cumulative_change": -1, "aligned_change": 1, "confidence": 1,
               "lowest_group": 1, "bottom_10": 1, "tail": 1, "length": -1}


def lt_per_layer(segments: torch.Tensor) -> dict[str, torch.Tensor]:
    """Net, Cumulative and Aligned Change per layer (``[L]`` each) of segment means ``[N, L, d]``."""
    n, layers = segments.shape[0], segments.shape[1]
    if n < 2:
        nan = torch.full((layers,), math.nan)
        return {name: nan.clone() for name in LT_SIGNALS}
    h = segments.double()
    steps = h[1:] - h[:-1]  # [N-1, L, d]
    drift = h[-1] - h[0]  # [L, d]
    net = drift.norm(dim=-1) / (n - 1)
    cumulative = steps.norm(dim=-1).sum(0)
    aligned = torch.nn.functional.cosine_similarity(steps, drift.expand_as(steps), dim=-1, eps=1e-12).mean(0)
    return {"net_change": net.float(), "cumulative_change": cumulative.float(), "aligned_change": aligned.float()}


def lt_prefix(segments: torch.Tensor) -> torch.Tensor:
    """The LT signals (mean over layers) of every prefix of the trajectory, ``[N, 3]`` in ``LT_SIGNALS``
    order: row ``i`` reads segments ``0..i`` only (row 0 is NaN), so it is what an online rule sees when
    segment ``i`` closes."""
    rows = [torch.stack([v.mean() for v in lt_per_layer(segments[: i + 1]).values()])
            for i in range(segments.shape[0])]
    return torch.stack(rows) if rows else torch.zeros(0, len(LT_SIGNALS))


def token_confidence(top_logprobs: torch.Tensor) -> torch.Tensor:
    """DeepConf token confidence ``-mean(top-k log-probs)`` per token, ``[n]`` (higher: more confident)."""
    return -top_logprobs.double().mean(-1).float()


def group_confidence(conf: torch.Tensor, window: int = WINDOW) -> torch.Tensor:
    """Mean token confidence over each sliding window of ``window`` tokens (one group when shorter)."""
    if conf.numel() == 0:
        return conf
    if conf.numel() <= window:
        return conf.double().mean().reshape(1).float()
    return conf.double().unfold(0, window, 1).mean(-1).float()


def confidence_signals(top_logprobs: torch.Tensor, window: int = WINDOW, tail: int = TAIL,
                       bottom: float = BOTTOM) -> dict[str, float]:
    """Mean, lowest-group, bottom-10%-group and tail confidence of one trace."""
    conf = token_confidence(top_logprobs)
    if conf.numel() == 0:
        return {name: math.nan for name in CONFIDENCE_SIGNALS}
    groups = group_confidence(conf, window)
    k = max(1, math.ceil(bottom * groups.numel()))
    return {"confidence": float(conf.mean()), "lowest_group": float(groups.min()),
            "bottom_10": float(groups.sort().values[:k].mean()), "tail": float(conf[-tail:].mean())}


def signals(trace: Trace, window: int = WINDOW, tail: int = TAIL) -> dict[str, float]:
    """Every signal of ``SIGNALS`` for one trace (LT signals averaged over the traced layers)."""
    out = {name: float(v.mean()) for name, v in lt_per_layer(trace.segments).items()}
    out.update(confidence_signals(trace.top_logprobs, window, tail))
    out["length"] = float(len(trace))
    return out
