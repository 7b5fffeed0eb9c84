"""Each reasoning signal, selector and stopping rule against a hand computation on small tensors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from steerlab.reasoning.selection import (
    best_by,
    calibrate_threshold,
    fit_combined,
    majority,
    sequential,
    shortest,
    weighted_vote,
)
from steerlab.reasoning.signals import confidence_signals, group_confidence, lt_per_layer, signals, token_confidence
from steerlab.reasoning.stopping import calibrate, stop_at
from steerlab.reasoning.tasks import extract
from steerlab.reasoning.traces import Trace

# two layers, three segments: layer 0 turns, layer 1 walks straight
SEGMENTS = torch.tensor([[[0.0, 0.0], [0.0, 0.0]],
                         [[3.0, 4.0], [1.0, 0.0]],
                         [[3.0, 0.0], [2.0, 0.0]]])
TOP = torch.tensor([[-1.0, -3.0], [-2.0, -2.0], [-0.5, -1.5], [-4.0, -4.0]])  # confidences 2, 2, 1, 4


def test_latent_trajectory_signals_per_layer():
    lt = lt_per_layer(SEGMENTS)
    # layer 0: steps (3,4) and (0,-4), drift (3,0): net 3/2, path 5+4, cosines 9/15 and 0
    torch.testing.assert_close(lt["net_change"], torch.tensor([1.5, 1.0]))
    torch.testing.assert_close(lt["cumulative_change"], torch.tensor([9.0, 2.0]))
    torch.testing.assert_close(lt["aligned_change"], torch.tensor([0.3, 1.0]))


def test_one_segment_gives_nan():
    assert all(math.isnan(v) for t in lt_per_layer(SEGMENTS[:1]).values() for v in t.tolist())


def test_confidence_signals():
    torch.testing.assert_close(token_confidence(TOP), torch.tensor([2.0, 2.0, 1.0, 4.0]))
    torch.testing.assert_close(group_confidence(token_confidence(TOP), 2), torch.tensor([2.0, 1.5, 2.5]))
    got = confidence_signals(TOP, window=2, tail=2)
    assert got == pytest.approx({"confidence": 2.25, "lowest_group": 1.5, "bottom_10": 1.5, "tail": 2.5})
    assert confidence_signals(TOP, window=10, tail=10)["lowest_group"] == pytest.approx(2.25)  # one group


def test_signals_average_layers():
    trace = Trace([5, 6, 7, 8], "", SEGMENTS, torch.zeros(4), TOP, [0, 1], 2)
    got = signals(trace, window=2, tail=2)
    assert got["net_change"] == pytest.approx(1.25)
    assert got["cumulative_change"] == pytest.approx(5.5)
    assert got["aligned_change"] == pytest.approx(0.65)
    assert got["length"] == 4


def test_votes_and_shortest():
    assert majority(["3", "4", "3", None]) == "3"
    assert majority(["4", "3"]) == "4"
    assert majority([None, None]) is None
    assert weighted_vote(["a", "b", "b"], [3.0, 1.0, 1.0]) == "a"
    assert shortest(["a", "b", None], [5, 2, 1]) == "b"
    assert best_by(["a", "b", "c"], [0.2, math.nan, 0.1]) == "a"


def test_sequential_selection_counts_tokens():
    assert sequential(["a", "b", "c"], [0.1, 0.9, 0.95], [10, 20, 30], 0.5) == ("b", 30)
    assert sequential(["a", "b", "a"], [0.1, 0.2, 0.3], [10, 20, 30], 2.0) == ("a", 60)


def test_threshold_calibration_picks_the_accurate_thresholds():
    # right for every question only with 0.3 < threshold <= 0.45: question 2 needs its wrong 0.3 rejected,
    # question 3 needs its right 0.45 accepted
    questions = [(["w", "r"], [0.2, 0.8], [1, 1]), (["w", "r"], [0.3, 0.6], [1, 1]), (["r", "w"], [0.45, 0.5], [1, 1])]
    right = [{"r"}, {"r"}, {"r"}]
    t = calibrate_threshold(questions, right, wrong_scores=[0.2, 0.3, 0.5])
    assert 0.3 < t <= 0.45
    assert all(sequential(a, s, n, t)[0] in ok for (a, s, n), ok in zip(questions, right))
    assert calibrate_threshold(questions, right, wrong_scores=[]) == -math.inf


def test_lt_combined_weights_follow_correlation():
    correct = np.array([1, 0, 1, 0, 1, 0])
    values = np.column_stack([correct * 2.0 + 1.0, np.array([1.0, 1.0, -1.0, -1.0, 0.0, 0.0])])
    comb = fit_combined(values, correct, ("good", "noise"), [1, 1])
    np.testing.assert_allclose(comb.weights, [1.0, 0.0], atol=1e-12)
    flipped = fit_combined(-values, correct, ("good", "noise"), [-1, 1])
    np.testing.assert_allclose(flipped.score(-values), comb.score(values))


def test_stop_rule_and_its_calibration():
    conf = np.array([3.0, 3.0, 1.0, 1.0, 3.0])  # windows of 2: 3, 2, 1, 2
    assert stop_at(conf, 2.0, window=2) == 4
    assert stop_at(conf, 0.5, window=2) is None
    assert stop_at(conf[:1], 9.0, window=2) is None
    # lowest groups 1 and 3 and 5: keeping the top two thirds puts the threshold at their 1/3 quantile
    t = calibrate([conf, np.array([3.0, 3.0]), np.array([5.0, 5.0, 5.0])], keep=2 / 3, window=2)
    assert t == pytest.approx(np.quantile([1.0, 3.0, 5.0], 1 / 3))


def test_extract():
    assert extract("3 + 4 = 7. Answer: 7") == "7"
    assert extract("The answer is **12**.") == "12"
    assert extract("first 5 then 6") == "6"
    assert extract("Answer: 2.50") == "2.5"
    assert extract("no digits") is None


def test_paired_difference_by_hand():
    from steerlab.reasoning import paired_difference

    assert paired_difference([1, 0, 1], [1, 0, 1]) == (0.0, 0.0, 0.0)
    assert paired_difference([1, 1, 1], [0, 0, 0]) == (1.0, 1.0, 1.0)
    mean, low, high = paired_difference([1, 1, 0, 0], [0, 1, 0, 0], seed=1)
    # a resample of 4 holds k copies of the one gain, mean k/4: P(k=0) = 0.32 > 2.5% puts the low end at 0,
    # P(k>=3) = 5.1% > 2.5% > P(k=4) = 0.4% puts the high end at 3/4
    assert (mean, low, high) == (0.25, 0.0, 0.75)
    with pytest.raises(ValueError):
        paired_difference([], [])
