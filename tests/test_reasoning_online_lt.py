"""Online early stopping by the latent trajectory: the prefix signals by hand, the live rule equals its
replay on full samples, and the evaluation's token accounting for ``online_lt``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from steerlab.reasoning import sample
from steerlab.reasoning.evaluation import Record, evaluate
from steerlab.reasoning.selection import Combined
from steerlab.reasoning.signals import lt_prefix
from steerlab.reasoning.stopping import calibrate_lt, lt_stop_at, lt_stopper
from tiny import tiny_model

PROMPTS = ["one", "two two", "three three three", "four"]
NET_ONLY = Combined(("net_change", "cumulative_change", "aligned_change"), np.zeros(3), np.ones(3),
                    np.array([1.0, 0.0, 0.0]), np.ones(3))


def test_lt_prefix_by_hand():
    torch.manual_seed(0)
    seg = torch.randn(4, 2, 5)
    got = lt_prefix(seg)
    assert torch.isnan(got[0]).all()
    for i in range(1, 4):
        h = seg[: i + 1].double()
        drift = h[-1] - h[0]
        net = [float(drift[layer].norm()) / i for layer in range(2)]
        cum = [sum(float((h[n + 1, layer] - h[n, layer]).norm()) for n in range(i)) for layer in range(2)]
        cos = [np.mean([float(torch.dot(h[n + 1, layer] - h[n, layer], drift[layer])
                              / ((h[n + 1, layer] - h[n, layer]).norm() * drift[layer].norm())) for n in range(i)])
               for layer in range(2)]
        assert got[i].tolist() == pytest.approx([np.mean(net), np.mean(cum), np.mean(cos)], rel=1e-5)


def test_lt_stop_at_by_hand():
    prefix = np.array([[np.nan] * 3, [3.0, 0, 0], [1.0, 0, 0], [0.5, 0, 0]])
    assert lt_stop_at(prefix, 16, NET_ONLY, 2.0, segment=4) == 12  # first close below 2.0: segment 3
    assert lt_stop_at(prefix, 16, NET_ONLY, 0.9, segment=4) == 16  # a close at the last token stops too
    assert lt_stop_at(prefix, 15, NET_ONLY, 0.9, segment=4) is None  # the 4th segment never closed
    assert lt_stop_at(prefix, 16, NET_ONLY, 0.1, segment=4) is None
    # lowest running score per sample, then the 50% quantile of [1.0, 0.5]
    assert calibrate_lt([prefix, prefix[:3]], [16, 12], NET_ONLY, 4, keep=0.5) == pytest.approx(0.75)


def test_live_lt_stopping_matches_the_replayed_rule():
    tiny = tiny_model("llama")
    full = sample(tiny, PROMPTS, segment=3, max_new_tokens=15, seed=7, chat=False)
    prefixes = [lt_prefix(t.segments).numpy() for t in full]
    lows = [NET_ONLY.score(p[1:]).min() for p, t in zip(prefixes, full) if len(t) >= 6]
    threshold = float(np.median(lows))
    online = sample(tiny, PROMPTS, segment=3, max_new_tokens=15, seed=7, chat=False,
                    stop=lt_stopper(NET_ONLY, threshold), stop_every=3)
    stops = [lt_stop_at(p, len(t), NET_ONLY, threshold, 3) for p, t in zip(prefixes, full)]
    assert any(s is not None for s in stops) and any(s is None for s in stops)
    for f, o, s in zip(full, online, stops):
        if s is None:
            assert o.tokens == f.tokens and not o.stopped
        else:
            assert o.stopped and o.tokens == f.tokens[:s]


def _record(q: int, s: int, answer: str, correct: bool, net: list[float]) -> Record:
    prefix = np.array([[np.nan] * 3] + [[v, 0.0, 0.0] for v in net])
    length = 4 * (len(net) + 1)
    sig = {"net_change": net[-1], "cumulative_change": 0.0, "aligned_change": 0.0, "confidence": 1.0,
           "lowest_group": 1.0, "bottom_10": 1.0, "tail": 1.0, "length": float(length)}
    per_layer = {k: np.array([sig[k]]) for k in ("net_change", "cumulative_change", "aligned_change")}
    return Record(q, s, answer, correct, [1] * length, sig, per_layer, np.array([net[-1]]), np.full(length, 1.0),
                  lt_prefix=prefix, segment=4)


def test_online_lt_tokens_and_vote_by_hand():
    records = [  # calibration (0, 1): right samples have a high net change, wrong ones a low one
        _record(0, 0, "1", True, [2.0, 2.0]), _record(0, 1, "2", False, [0.1, 0.1]),
        _record(1, 0, "3", True, [2.0, 2.0]), _record(1, 1, "4", False, [0.2, 0.2]),
        # test: the wrong samples (answer 9) dip early, the right one (5) never
        _record(2, 0, "9", False, [0.0, 0.0]), _record(2, 1, "9", False, [0.0, 0.0]), _record(2, 2, "5", True, [3.0, 3.0]),
    ]
    rows, _, settings = evaluate(records, {0, 1}, decode=lambda t: "", keep=0.5)
    by = {r["selector"]: r for r in rows}
    assert by["majority"]["accuracy"] == 0.0 and by["majority"]["tokens"] == 36
    # LT-Combined is net change only (the other two are constant), z-scored on calibration samples
    assert settings["lt_combined_weights"]["net_change"] == pytest.approx(1.0)
    # each wrong sample stops at the first check (8 tokens); the right one runs its 12; it alone votes
    assert by["online_lt"]["accuracy"] == 1.0 and by["online_lt"]["tokens"] == 8 + 8 + 12
    # paired on the one test question: +1 against majority, and every bootstrap resample says so
    assert (by["online_lt"]["vs_majority"], by["online_lt"]["vs_majority_low"], by["online_lt"]["vs_majority_high"]) \
        == (1.0, 1.0, 1.0)
    assert by["majority"]["vs_majority"] == 0.0
