"""Score every selector on the same samples: calibrate on one split of the questions, measure on the other.

Each row has the accuracy with its 95% Wilson interval and, paired on the same questions, the accuracy
difference to majority vote over all N with a 95% bootstrap interval (``vs_majority``, ``_low``, ``_high``).

Tokens are counted per question as decoded tokens: best-of-N selectors pay for all N full samples;
``shortest`` pays N times the shortest sample (parallel decoding can stop every sample when the first
finishes); ``majority@k`` pays the first k samples; sequential selectors pay the samples drawn up to
acceptance; online stopping (``online_stop`` by confidence, ``online_lt`` by the running LT-Combined
score) pays each sample up to where it was stopped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .probe import fit_probe
from .selection import (
    best_by,
    calibrate_threshold,
    fit_combined,
    majority,
    sequential,
    shortest,
    weighted_vote,
)
from .signals import LT_SIGNALS, ORIENTATION, SIGNALS, WINDOW
from .stopping import KEEP, calibrate, calibrate_lt, lt_stop_at, stop_at
from .tasks import extract

#: signals whose best sample is a selector, and those used for sequential early selection
BEST_OF = ("net_change", "cumulative_change", "aligned_change", "lt_combined", "confidence", "lowest_group",
           "bottom_10", "tail", "probe")
#: paired bootstrap resamples of questions for the accuracy difference to majority vote
BOOTSTRAP = 2000
SEQUENTIAL = ("net_change", "cumulative_change", "aligned_change", "lt_combined", "lowest_group", "probe")


def paired_difference(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, seed: int = 0,
                      resamples: int = BOOTSTRAP) -> tuple[float, float, float]:
    """Mean of ``a - b`` over the same items (e.g. right/wrong per question under two selectors) and
    its 95% paired bootstrap interval (items resampled with replacement)."""
    delta = np.asarray(a, float) - np.asarray(b, float)
    if delta.ndim != 1 or delta.size == 0:
        raise ValueError(f"a and b must be equal-length, non-empty 1-D sequences, got shape {delta.shape}")
    picks = np.random.default_rng(seed).integers(0, delta.size, size=(resamples, delta.size))
    low, high = np.percentile(delta[picks].mean(1), [2.5, 97.5])
    return float(delta.mean()), float(low), float(high)


@dataclass
class Record:
    """One sample of one question with its answer, its correctness and its signals."""

    question: int
    sample: int
    answer: str | None
    correct: bool
    tokens: list[int]
    signals: dict[str, float]
    per_layer: dict[str, np.ndarray]
    features: np.ndarray
    confidence: np.ndarray  # per-token DeepConf confidence
    scores: dict[str, float] = field(default_factory=dict)  # oriented: higher = more likely right
    lt_prefix: np.ndarray | None = None  # [segments, 3] LT signals of each prefix (see signals.lt_prefix)
    segment: int = 0  # tokens per segment of the trace

    @property
    def length(self) -> int:
        return len(self.tokens)


def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion."""
    if n == 0:
        return math.nan, math.nan
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def auroc(scores: Sequence[float], correct: Sequence[bool]) -> float:
    """ROC-AUC of ``scores`` for "this sample is right" (NaN scores dropped; NaN with one class)."""
    from sklearn.metrics import roc_auc_score

    s, y = np.asarray(scores, float), np.asarray(correct, int)
    keep = ~np.isnan(s)
    if len(set(y[keep].tolist())) < 2:
        return math.nan
    return float(roc_auc_score(y[keep], s[keep]))


def within_question_auroc(records: Sequence[Record], name: str) -> float:
    """Mean over questions of the AUROC of signal ``name`` among that question's own samples (questions
    with both right and wrong samples only): how well the signal picks within a question, with question
    difficulty taken out (NaN when no question has both)."""
    values = [auroc([r.scores[name] for r in rs], [r.correct for r in rs]) for rs in _group(records).values()]
    values = [v for v in values if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


def _group(records: Sequence[Record]) -> dict[int, list[Record]]:
    out: dict[int, list[Record]] = {}
    for r in sorted(records, key=lambda r: (r.question, r.sample)):
        out.setdefault(r.question, []).append(r)
    return out


def _oriented(r: Record, name: str) -> float:
    return ORIENTATION[name] * r.signals[name]


def evaluate(records: Sequence[Record], calibration: set[int], decode: Callable[[list[int]], str],
             window: int = WINDOW, keep: float = KEEP, seed: int = 0) -> tuple[list[dict], list[dict], dict]:
    """Selection rows, AUROC rows and the calibrated settings, measured on the non-calibration questions."""
    cal = [r for r in records if r.question in calibration]
    test = [r for r in records if r.question not in calibration]
    if not cal or not test:
        raise ValueError("need questions in both the calibration and the test split")
    for r in records:
        r.scores = {name: _oriented(r, name) for name in SIGNALS}
    lt_values = lambda rs: np.array([[r.signals[n] for n in LT_SIGNALS] for r in rs])
    combined = fit_combined(lt_values(cal), np.array([r.correct for r in cal]), LT_SIGNALS,
                            [ORIENTATION[n] for n in LT_SIGNALS])
    probe = fit_probe(np.stack([r.features for r in cal]), [r.correct for r in cal], seed=seed)
    for rs in (cal, test):
        for r, c, p in zip(rs, combined.score(lt_values(rs)), probe.prob(np.stack([x.features for x in rs]))):
            r.scores["lt_combined"], r.scores["probe"] = float(c), float(p)
    cal_q, test_q = _group(cal), _group(test)
    right = {q: {r.answer for r in rs if r.correct and r.answer is not None} for q, rs in {**cal_q, **test_q}.items()}
    thresholds = {}
    for name in SEQUENTIAL:
        wrong = [r.scores[name] for r in cal if not r.correct]
        qs = [([r.answer for r in rs], [r.scores[name] for r in rs], [r.length for r in rs]) for rs in cal_q.values()]
        thresholds[name] = calibrate_threshold(qs, [right[q] for q in cal_q], wrong)
    stop_threshold = calibrate([r.confidence for r in cal], keep, window)
    has_prefix = all(r.lt_prefix is not None and r.segment > 0 for r in records)
    lt_threshold = (calibrate_lt([r.lt_prefix for r in cal if r.lt_prefix is not None], [r.length for r in cal], combined, cal[0].segment, keep)
                    if has_prefix else None)

    n = min(len(rs) for rs in test_q.values())
    chosen: dict[str, list[tuple[str | None, int]]] = {}

    def add(name: str, q: int, answer: str | None, tokens: int) -> None:
        chosen.setdefault(name, []).append((answer, tokens))

    for q, rs in test_q.items():
        answers, lengths = [r.answer for r in rs], [r.length for r in rs]
        total = sum(lengths)
        for k in range(1, n + 1):
            add(f"majority@{k}", q, majority(answers[:k]), sum(lengths[:k]))
        add("majority", q, majority(answers), total)
        add("confidence_vote", q, weighted_vote(answers, [r.signals["confidence"] for r in rs]), total)
        add("probe_vote", q, weighted_vote(answers, [r.scores["probe"] for r in rs]), total)
        add("shortest", q, shortest(answers, lengths), len(rs) * min(lengths))
        for name in BEST_OF:
            add(name, q, best_by(answers, [r.scores[name] for r in rs]), total)
        for name in SEQUENTIAL:
            add(f"sequential_{name}", q, *sequential(answers, [r.scores[name] for r in rs], lengths,
                                                      thresholds[name]))
        add("online_stop", q, *_online(rs, stop_threshold, window, decode))
        if lt_threshold is not None:
            add("online_lt", q, *_online_lt(rs, combined, lt_threshold, decode))
    rows = []
    per_question = {name: np.array([a in right[q] for (a, _), q in zip(picks, test_q)], float)
                    for name, picks in chosen.items()}
    for name, picks in chosen.items():
        hits = int(per_question[name].sum())
        low, high = wilson(hits, len(picks))
        delta, d_low, d_high = paired_difference(per_question[name], per_question["majority"], seed)
        rows.append({"selector": name, "accuracy": hits / len(picks), "ci_low": low, "ci_high": high,
                     "tokens": float(np.mean([t for _, t in picks])), "questions": len(picks),
                     "vs_majority": delta, "vs_majority_low": d_low, "vs_majority_high": d_high})
    aurocs = _aurocs(test)
    settings = {"thresholds": thresholds, "stop_threshold": stop_threshold, "lt_stop_threshold": lt_threshold,
                "lt_combined_weights": dict(zip(LT_SIGNALS, combined.weights.tolist())),
                "oracle": float(np.mean([bool(right[q]) for q in test_q])),
                "sample_accuracy": float(np.mean([r.correct for r in test])),
                "mean_length": float(np.mean([r.length for r in test])),
                "calibration_questions": len(cal_q), "test_questions": len(test_q), "samples": n}
    return rows, aurocs, settings


def _online(rs: Sequence[Record], threshold: float, window: int,
            decode: Callable[[list[int]], str]) -> tuple[str | None, int]:
    """DeepConf-style online stopping replayed exactly on full samples: each sample stops at the first
    window whose mean confidence is below ``threshold``; a confidence-weighted vote of the unstopped."""
    kept, weights, spent, truncated = [], [], 0, []
    for r in rs:
        at = stop_at(r.confidence, threshold, window)
        if at is None:
            kept.append(r.answer)
            weights.append(r.signals["confidence"])
            spent += r.length
        else:
            spent += at
            truncated.append(extract(decode(r.tokens[:at])))
    if kept:
        return weighted_vote(kept, weights), spent
    return majority(truncated), spent


def _online_lt(rs: Sequence[Record], combined, threshold: float,
               decode: Callable[[list[int]], str]) -> tuple[str | None, int]:
    """Online stopping by the running LT-Combined score, replayed exactly (``lt_stop_at``); majority vote
    of the unstopped samples, else of the stopped ones' answers so far."""
    kept, spent, truncated = [], 0, []
    for r in rs:
        assert r.lt_prefix is not None
        at = lt_stop_at(r.lt_prefix, r.length, combined, threshold, r.segment)
        if at is None:
            kept.append(r.answer)
            spent += r.length
        else:
            spent += at
            truncated.append(extract(decode(r.tokens[:at])))
    return (majority(kept) if kept else majority(truncated)), spent


def _aurocs(test: Sequence[Record]) -> list[dict]:
    correct = [r.correct for r in test]
    rows = [{"signal": name, "layer": "all", "auroc": auroc([r.scores[name] for r in test], correct),
             "auroc_within": within_question_auroc(test, name), "samples": len(test)}
            for name in (*SIGNALS, "lt_combined", "probe")]
    for name in LT_SIGNALS:
        for layer in range(len(test[0].per_layer[name])):
            rows.append({"signal": name, "layer": str(layer), "samples": len(test),
                         "auroc": auroc([ORIENTATION[name] * float(r.per_layer[name][layer]) for r in test], correct)})
    return rows
