"""Probe fitting, probe maps over layers x tokens (generated ones too) and the tail-aligned trace."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import steerlab as sl
from analysis_refs import hidden
from steerlab.data.contrastive import ContrastiveSet

POS = ["I love this sunny day", "what a great happy time", "this is wonderful news", "so glad and cheerful"]
NEG = ["I hate this rainy day", "what a awful sad time", "this is terrible news", "so grim and miserable"]


def test_fit_probe_folds_the_scaling_into_raw_weights(tiny_llama):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    pairs = ContrastiveSet(POS, NEG, "toy")
    probe = sl.analysis.fit_probe(tiny_llama, pairs, layers=[1, 2], C=0.5)
    assert probe.layer == 1 and set(probe.weights) == {1, 2}
    x = torch.stack([hidden(tiny_llama, t)[2][-1] for t in POS + NEG]).double().numpy()
    y = np.array([1] * 4 + [0] * 4)
    reference = make_pipeline(StandardScaler(), LogisticRegression(C=0.5, max_iter=2000)).fit(x, y)
    got = probe.prob(torch.tensor(x, dtype=torch.float32), 1).numpy()
    assert np.allclose(got, reference.predict_proba(x)[:, 1], atol=1e-3)
    assert probe.meta["train_accuracy"][1] == pytest.approx(reference.score(x, y))


def test_probe_map_scores_are_w_dot_h_plus_b(tiny_llama):
    torch.manual_seed(0)
    w, b = torch.randn(tiny_llama.d_model), 0.3
    table = sl.analysis.probe_map(tiny_llama, ["hello world", "abc"], (w, b), layers=[0, 1])
    assert len(table) == 2 * (11 + 3)
    for i, text in enumerate(["hello world", "abc"]):
        states = hidden(tiny_llama, text)
        for layer in (0, 1):
            rows = table[(table["text"] == i) & (table["layer"] == layer)].sort_values("position")
            want = states[layer + 1] @ w + b
            assert np.allclose(rows["score"], want.numpy(), atol=1e-4)
            assert np.allclose(rows["prob"], torch.sigmoid(want).numpy(), atol=1e-5)
            assert rows["tail"].tolist() == list(range(-len(text), 0))
    assert not table["generated"].any()


def test_probe_map_scores_generated_tokens(tiny_llama):
    torch.manual_seed(0)
    w = torch.randn(tiny_llama.d_model)
    table = sl.analysis.probe_map(tiny_llama, ["hello"], (w, 0.0), layers=[2], generate=4)
    generated = tiny_llama.generate(["hello"], max_new_tokens=4, chat=False)
    n_new = len(tiny_llama.tokenizer(generated.texts[0], add_special_tokens=False)["input_ids"])
    assert table["generated"].sum() == n_new
    assert not table[table["position"] < 5]["generated"].any()
    trace = sl.analysis.probe_trace(table, layer=2, n_points=None)
    assert n_new > 0 and trace["generated"].iloc[-1] == 1.0 and trace["generated"].iloc[0] == 0.0


def test_as_probe_reads_a_direction_with_intercepts():
    from steerlab.directions.direction import Direction

    d = Direction({3: torch.ones(4), 5: torch.full((4,), 2.0)}, meta={"intercepts": {"3": -1.0, "5": 0.5}})
    probe = sl.analysis.as_probe(d, layer=5)
    assert probe.layer == 5 and probe.biases == {3: -1.0, 5: 0.5}
    h = torch.ones(2, 4)
    assert torch.allclose(probe.score(h, 3), torch.full((2,), 3.0))
    assert torch.allclose(probe.score(h, 7), torch.full((2,), 8.5))  # a layer it has no probe for: the fit layer's
    with pytest.raises(sl.SteerlabError):
        sl.analysis.as_probe("nope")


def _table(values: dict[int, list[float]]) -> pd.DataFrame:
    rows = []
    for text, seq in values.items():
        for pos, v in enumerate(seq):
            rows.append({"text": text, "layer": 0, "position": pos, "tail": pos - len(seq), "prob": v, "score": v})
    return pd.DataFrame(rows)


def test_trace_tail_aligns_and_averages_by_hand():
    trace = sl.analysis.probe_trace(_table({0: [0.9, 0.1, 0.2, 0.3], 1: [0.5, 0.7]}), layer=0)
    assert trace["tail"].tolist() == [-2, -1]  # window = the shortest text
    assert trace["mean"].tolist() == pytest.approx([(0.2 + 0.5) / 2, (0.3 + 0.7) / 2])
    assert trace["std"].tolist() == pytest.approx([0.15, 0.2])
    assert trace["n"].tolist() == [2, 2]


def test_long_traces_are_resampled_cubically():
    seq = list(np.linspace(0.0, 1.0, 300))
    trace = sl.analysis.probe_trace(_table({0: seq, 1: seq}), layer=0, n_points=100)
    assert len(trace) == 100
    assert trace["tail"].iloc[0] == -300 and trace["tail"].iloc[-1] == -1
    assert np.allclose(trace["mean"], np.interp(trace["tail"], np.arange(-300, 0), seq), atol=1e-9)  # linear stays linear
    with pytest.raises(sl.SteerlabError, match="layer"):
        sl.analysis.probe_trace(_table({0: seq}), layer=4)
