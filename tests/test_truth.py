"""Truth stability: the flip rate of a true/not-true probe when "neither" statements are relabelled."""

from __future__ import annotations

import pytest
import torch

import steerlab as sl
from steerlab.analysis.truth import split_statements, stability_from_activations, truth_stability


def cluster(center, n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.tensor(center, dtype=torch.float32) + 0.05 * torch.randn(n, 2, generator=g)
    return x[:, None, :]  # [n, L=1, d=2]


def test_flip_rate_on_hand_built_geometry():
    # true at x=+3, false at x=-3, neither at x=0 (second axis is noise). Probe A (neither = not true) puts the
    # boundary between 0 and 3, probe B (neither = true) between -3 and 0. A held-out "true" statement lying
    # on the neither cluster is therefore called not-true by A and true by B: one flip out of four.
    train = {"true": cluster([3, 0], 20, 0), "false": cluster([-3, 0], 20, 1), "neither": cluster([0, 0], 20, 2)}
    test = {"true": torch.cat([cluster([3, 0], 1, 3), cluster([0, 0], 1, 4)]),
            "false": torch.cat([cluster([-3, 0], 1, 5), cluster([-3, 0], 1, 6)]),
            "neither": cluster([0, 0], 3, 7)}
    row = stability_from_activations(train, test, [5], C=100.0).iloc[0]
    assert row["layer"] == 5
    assert row["flip_rate"] == pytest.approx(0.25)
    assert row["accuracy"] == pytest.approx(0.75) and row["accuracy_b"] == pytest.approx(1.0)
    assert row["flip_rate_neither"] == pytest.approx(1.0)
    assert row["neither_true_a"] == 0.0 and row["neither_true_b"] == 1.0


def test_no_flips_when_neither_is_far_from_the_boundary():
    # neither far along the second axis, on the false side: both probes separate true from false the same way
    train = {"true": cluster([3, 0], 20, 0), "false": cluster([-3, 0], 20, 1), "neither": cluster([-3, 8], 20, 2)}
    test = {"true": cluster([3, 0], 4, 3), "false": cluster([-3, 0], 4, 4), "neither": cluster([-3, 8], 2, 5)}
    row = stability_from_activations(train, test, [0], C=100.0).iloc[0]
    assert row["flip_rate"] == 0.0 and row["accuracy"] == 1.0


def test_split_keeps_matched_pairs_together_and_sides_disjoint():
    s = sl.data.truth_statements()
    assert {k: len(v) for k, v in s.items()} == {"true": 48, "false": 48, "neither": 48}
    split = split_statements(s, test=0.25, seed=3)
    for label in s:
        assert not set(split["train"][label]) & set(split["test"][label])
        assert sorted(split["train"][label] + split["test"][label]) == sorted(s[label])
    index = {t: i for i, t in enumerate(s["true"])}
    findex = {t: i for i, t in enumerate(s["false"])}
    assert sorted(index[t] for t in split["test"]["true"]) == sorted(findex[f] for f in split["test"]["false"])
    with pytest.raises(sl.SteerlabError, match="neither"):
        split_statements({"true": ["a"] * 5, "false": ["b"] * 5, "neither": []})


def test_truth_stability_runs_on_a_tiny_model(tiny_llama):
    result = truth_stability(tiny_llama, layers=[0, 2], test=0.25, progress=False)
    t = result.table
    assert list(t["layer"]) == [0, 2]
    assert t["flip_rate"].between(0, 1).all() and (t["n_test_tf"] == 24).all()
    with pytest.raises(sl.SteerlabError, match="template"):
        truth_stability(tiny_llama, template="no slot")
