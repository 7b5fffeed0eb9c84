"""Online early stopping (DeepConf-style): finish a sample mid-generation once its group confidence
(the mean token confidence of its last ``window`` tokens) drops below a threshold calibrated on
full calibration samples; stopped samples are left out of the vote.

``stop_at`` replays the rule on a full sample: because the rule only reads the prefix, it stops where
``confidence_stopper`` would have stopped the same sample during generation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from .signals import WINDOW, group_confidence, token_confidence
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
