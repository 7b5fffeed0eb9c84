"""Online early stopping: finish a sample mid-generation once a running signal drops below a
threshold calibrated on full calibration samples; stopped samples are left out of the vote.

Two signals: DeepConf's group confidence (the mean token confidence of the last ``window`` tokens,
checked every token) and a latent-trajectory score (LT-Combined of the segment means so far, checked
each time a segment closes, from the second segment on).

``stop_at`` and ``lt_stop_at`` replay the rules on a full sample: because a rule only reads the
prefix, each stops where ``confidence_stopper`` / ``lt_stopper`` would have stopped the same sample
during generation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from .selection import Combined
from .signals import WINDOW, group_confidence, lt_per_layer, token_confidence
from .traces import Stopper, Trace

#: share of calibration samples kept: the threshold is the (1 - KEEP) quantile of their lowest group
#: confidence (DeepConf-high keeps 90%, DeepConf-low 10%)
KEEP = 0.9


def _conf(confidence: np.ndarray | torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(np.asarray(confidence, dtype=np.float32))


def calibrate(confidences: Sequence[np.ndarray | torch.Tensor], keep: float = KEEP, window: int = WINDOW) -> float:
    """The lowest-group-confidence threshold that keeps a ``keep`` share of the samples whose
    per-token confidences are ``confidences`` (samples shorter than ``window`` are never stopped)."""
    if not 0 < keep <= 1:
        raise ValueError(f"keep must be in (0, 1], got {keep!r}")
    lows = [float(group_confidence(_conf(c), window).min()) for c in confidences if len(c) >= window]
    return float(np.quantile(lows, 1.0 - keep)) if lows else -math.inf


def stop_at(confidence: np.ndarray | torch.Tensor, threshold: float, window: int = WINDOW) -> int | None:
    """Tokens decoded when the rule stops this sample (per-token ``confidence``), or None if never:
    the first ``n >= window`` whose last ``window`` tokens' mean confidence is below ``threshold``."""
    conf = _conf(confidence)
    if conf.numel() < window:
        return None
    below = (group_confidence(conf, window) < threshold).nonzero().flatten()
    return int(below[0]) + window if below.numel() else None


def confidence_stopper(threshold: float, window: int = WINDOW) -> Stopper:
    """A ``stop`` for ``sample``: True once the last ``window`` tokens' mean confidence < ``threshold``."""
    def stop(row: int, trace: Trace) -> bool:
        if len(trace) < window:
            return False
        return float(group_confidence(token_confidence(trace.top_logprobs[-window:]), window)[0]) < threshold
    return stop


def calibrate_lt(prefixes: Sequence[np.ndarray], lengths: Sequence[int], combined: Combined, segment: int,
                 keep: float = KEEP) -> float:
    """The running-LT-score threshold that keeps a ``keep`` share of calibration samples: the
    ``1 - keep`` quantile of each sample's lowest score at a segment close (at most its length)
    (``prefixes``: ``[segments, 3]`` LT signals of each prefix, ``signals.lt_prefix``)."""
    if not 0 < keep <= 1:
        raise ValueError(f"keep must be in (0, 1], got {keep!r}")
    lows = []
    for prefix, n in zip(prefixes, lengths):
        scores = _checkpoints(prefix, n, combined, segment)
        if scores.size:
            lows.append(float(scores.min()))
    return float(np.quantile(lows, 1.0 - keep)) if lows else -math.inf


def _checkpoints(prefix: np.ndarray, length: int, combined: Combined, segment: int) -> np.ndarray:
    """Running scores at the segment closes an online rule sees before the sample ends (NaN dropped)."""
    closes = [i for i in range(1, len(prefix)) if (i + 1) * segment <= length]
    if not closes:
        return np.zeros(0)
    scores = combined.score(np.asarray(prefix, float)[closes])
    return scores[~np.isnan(scores)]


def lt_stop_at(prefix: np.ndarray, length: int, combined: Combined, threshold: float, segment: int) -> int | None:
    """Tokens decoded when the LT rule stops a sample of ``length`` tokens, or None if never: the
    first segment close ``(i + 1) * segment <= length`` (``i >= 1``) whose running score < ``threshold``
    (a close at the last token counts: the sample is then stopped, i.e. left out of the vote)."""
    for i in range(1, len(prefix)):
        if (i + 1) * segment > length:
            return None
        score = float(combined.score(np.asarray(prefix[i], float)[None])[0])
        if score < threshold:
            return (i + 1) * segment
    return None


def lt_stopper(combined: Combined, threshold: float) -> Stopper:
    """A ``stop`` for ``sample(..., stop_every=segment)``: True once the LT-Combined score of the
    segment means so far (two or more closed segments) is below ``threshold``."""
    def stop(row: int, trace: Trace) -> bool:
        if trace.segments.shape[0] < 2 or len(trace) % trace.segment:
            return False
        values = np.array([[float(v.mean()) for v in lt_per_layer(trace.segments).values()]])
        return bool(combined.score(values)[0] < threshold)
    return stop
