"""A learned correctness probe over trace features: logistic regression on the per-layer LT signals,
the confidence signals and the length, standardised, fit on calibration samples only."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .signals import CONFIDENCE_SIGNALS, WINDOW, confidence_signals, lt_per_layer
from .traces import Trace


def features(trace: Trace, window: int = WINDOW) -> np.ndarray:
    """Per-layer Net/Cumulative/Aligned Change, the confidence signals and log length (NaN -> 0)."""
    lt = lt_per_layer(trace.segments)
    conf = confidence_signals(trace.top_logprobs, window)
    parts = [lt[name].numpy() for name in sorted(lt)] + [np.array([conf[n] for n in CONFIDENCE_SIGNALS]),
                                                         np.array([np.log1p(len(trace))])]
    return np.nan_to_num(np.concatenate(parts).astype(float))


@dataclass
class CorrectnessProbe:
    """``prob(features)``: P(this sample's answer is right)."""

    model: object | None
    constant: float = 0.5

    def prob(self, x: np.ndarray) -> np.ndarray:
        x = np.atleast_2d(x)
        if self.model is None:
            return np.full(len(x), self.constant)
        return self.model.predict_proba(x)[:, 1]  # type: ignore[attr-defined]


def fit_probe(x: np.ndarray, correct: Sequence[bool], C: float = 0.1, seed: int = 0) -> CorrectnessProbe:
    """Fit on calibration rows ``[n, f]``; a constant probe when only one class is present."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = np.asarray(correct, int)
    if len(set(y.tolist())) < 2:
        return CorrectnessProbe(None, float(y.mean()) if len(y) else 0.5)
    pipe = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000, random_state=seed))
    return CorrectnessProbe(pipe.fit(x, y))
