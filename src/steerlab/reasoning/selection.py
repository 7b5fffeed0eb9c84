"""Choosing one answer among N samples: votes, shortest answer, best by a signal, LT-Combined, and
sequential early selection (accept the first sample whose signal passes a calibrated threshold)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Answer = str | None


def majority(answers: Sequence[Answer]) -> Answer:
    """The most common extracted answer (None ignored; ties go to the one seen first)."""
    return weighted_vote(answers, [1.0] * len(answers))


def weighted_vote(answers: Sequence[Answer], weights: Sequence[float]) -> Answer:
    """The answer with the largest total weight (DeepConf's confidence-weighted vote); ties: first seen."""
    total: dict[str, float] = {}
    for a, w in zip(answers, weights):
        if a is not None and not math.isnan(w):
            total[a] = total.get(a, 0.0) + w
    if not total:
        return next((a for a in answers if a is not None), None)
    best = max(total.values())
    return next(a for a in total if total[a] == best)


def shortest(answers: Sequence[Answer], lengths: Sequence[int]) -> Answer:
    """The answer of the shortest sample that gave one."""
    have = [i for i, a in enumerate(answers) if a is not None]
    return answers[min(have, key=lambda i: lengths[i])] if have else None


def best_by(answers: Sequence[Answer], scores: Sequence[float]) -> Answer:
    """The answer of the sample with the highest score (NaN scores last); falls back to majority."""
    order = [i for i in np.argsort([-s if not math.isnan(s) else math.inf for s in scores], kind="stable")]
    for i in order:
        if answers[i] is not None and not math.isnan(scores[i]):
            return answers[i]
    return majority(answers)


@dataclass
class Combined:
    """LT-Combined: z-scored signals (cumulative sign-flipped) weighted by |Pearson r| with correctness."""

    names: tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray
    weights: np.ndarray
    signs: np.ndarray

    def score(self, values: np.ndarray) -> np.ndarray:
        """Combined score of rows ``[n, len(names)]`` (NaN where a signal is NaN)."""
        z = (np.asarray(values, float) - self.mean) / self.std * self.signs
        return z @ self.weights


def fit_combined(values: np.ndarray, correct: np.ndarray, names: Sequence[str], signs: Sequence[int]) -> Combined:
    """Fit LT-Combined on calibration rows ``[n, k]`` with 0/1 ``correct`` (rows with NaN are skipped)."""
    values, correct = np.asarray(values, float), np.asarray(correct, float)
    keep = ~np.isnan(values).any(1)
    v, c = values[keep], correct[keep]
    k = values.shape[1]
    if len(v) < 2:  # too few samples with every signal (traces of one segment): equal weights, no scaling
        return Combined(tuple(names), np.zeros(k), np.ones(k), np.full(k, 1.0 / k), np.asarray(signs, float))
    mean, std = v.mean(0), v.std(0)
    std = np.where(std > 0, std, 1.0)
    z = (v - mean) / std * np.asarray(signs, float)
    r = np.array([abs(np.corrcoef(z[:, j], c)[0, 1]) if z[:, j].std() > 0 and c.std() > 0 else 0.0
                  for j in range(z.shape[1])])
    r = np.nan_to_num(r)
    weights = r / r.sum() if r.sum() > 0 else np.full(len(r), 1.0 / len(r))
    return Combined(tuple(names), mean, std, weights, np.asarray(signs, float))


def sequential(answers: Sequence[Answer], scores: Sequence[float], lengths: Sequence[int],
               threshold: float) -> tuple[Answer, int]:
    """Draw samples in order; accept the first with ``score >= threshold``, else majority over all.
    Returns the answer and the tokens spent (every sample drawn up to acceptance)."""
    spent = 0
    for a, s, n in zip(answers, scores, lengths):
        spent += n
        if not math.isnan(s) and s >= threshold and a is not None:
            return a, spent
    return majority(answers), spent


def calibrate_threshold(questions: Sequence[tuple[Sequence[Answer], Sequence[float], Sequence[int]]],
                        right: Sequence[set[str]], wrong_scores: Sequence[float]) -> float:
    """Threshold for ``sequential``: among the 20th..99th percentiles of the scores of wrong
    calibration samples, the two that give the best calibration accuracy; their median (mean of two).

    ``questions``: per question (answers, scores, lengths); ``right``: the answers scored right.
    """
    wrong = np.asarray([s for s in wrong_scores if not math.isnan(s)], float)
    if wrong.size == 0:
        return -math.inf
    candidates = np.unique(np.percentile(wrong, np.arange(20, 100)))
    accuracy = []
    for t in candidates:
        hits = [sequential(a, s, n, float(t))[0] in ok for (a, s, n), ok in zip(questions, right)]
        accuracy.append(float(np.mean(hits)))
    top = np.argsort(-np.asarray(accuracy), kind="stable")[:2]
    return float(np.median(candidates[top]))
