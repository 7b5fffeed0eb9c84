"""Step-wise do-interventions and the necessity metrics, against hand-hooked forwards."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

import steerlab as sl
from analysis_refs import hooked, ids_of, logits_all
from steerlab.analysis.do_interventions import _stats

PROMPTS = ["ab\ncd\nef=", "gh\nij\nkl="]
GOLD = ["xy", "zw"]


def test_step_spans_split_at_the_separator(tiny_llama):
    spans = sl.analysis.step_spans(tiny_llama, PROMPTS)
    assert spans == [[(0, 3), (3, 6), (6, 9)], [(0, 3), (3, 6), (6, 9)]]


def _scores(model, text, start, fn=None, layer=1):
    ids = ids_of(model, text)[0]
    if fn is None:
        logits = logits_all(model, text)
    else:
        with hooked(model.hf_model.model.layers[layer], fn, pre=True):
            logits = logits_all(model, text)
    logp = logits[start - 1: len(ids) - 1].log_softmax(-1)
    answer = ids[start:]
    tok = logp.gather(1, answer[:, None])[:, 0]
    return float(tok.sum()), float(tok[-1]), logp[0], bool((logp.argmax(-1) == answer).all())


def _resid_pre(model, text, layer=1):
    store = {}

    def keep(x):
        store["h"] = x[0].detach().clone()
        return x

    with hooked(model.hf_model.model.layers[layer], keep, pre=True):
        logits_all(model, text)
    return store["h"]


def test_zero_and_step_mean_match_hand_hooks(tiny_llama):
    model = tiny_llama
    spans = sl.analysis.step_spans(model, PROMPTS)
    table = sl.analysis.step_interventions(model, PROMPTS, GOLD, spans, modes=("zero", "step_mean"), layers=[1])
    assert len(table) == 2 * 2 * 3
    states = [_resid_pre(model, p + g) for p, g in zip(PROMPTS, GOLD)]
    for i, (prompt, gold) in enumerate(zip(PROMPTS, GOLD)):
        text, start = prompt + gold, len(prompt)
        before = _scores(model, text, start)
        for t, (a, b) in enumerate(spans[i]):
            mu = torch.cat([states[j][spans[j][t][0]:spans[j][t][1]] for j in range(2)]).mean(0)
            for mode, value in (("zero", torch.zeros_like(mu)), ("step_mean", mu)):
                def fn(x, a=a, b=b, value=value):
                    y = x.clone()
                    y[0, a:b] = value
                    return y
                after = _scores(model, text, start, fn)
                row = table[(table["text"] == i) & (table["mode"] == mode) & (table["step"] == t)].iloc[0]
                assert row["dlogp_gold"] == pytest.approx(after[0] - before[0], abs=1e-4)
                assert row["dlogp_final"] == pytest.approx(after[1] - before[1], abs=1e-4)
                kl = float((before[2].exp() * (before[2] - after[2])).sum())
                assert row["kl"] == pytest.approx(kl, abs=1e-4)
                assert row["correct_before"] == before[3] and row["correct_after"] == after[3]


def test_sigma_is_half_the_mean_norm_over_root_d(tiny_llama):
    model = tiny_llama
    spans = sl.analysis.step_spans(model, PROMPTS)
    texts = [p + g for p, g in zip(PROMPTS, GOLD)]
    acts = model.capture(texts, sites="layers.1.resid_pre", positions="all")
    stats = _stats(acts, spans, [1], "resid_pre", None)
    every = torch.cat([_resid_pre(model, t)[a:b] for t, row in zip(texts, spans) for a, b in row])
    assert stats[1]["sigma"] == pytest.approx(0.5 * float(every.norm(dim=-1).mean()) / model.d_model ** 0.5, rel=1e-5)
    assert torch.allclose(stats[1]["mean"], every.mean(0), atol=1e-5)


def test_noise_modes_are_seeded(tiny_llama):
    spans = sl.analysis.step_spans(tiny_llama, PROMPTS)
    run = lambda seed: sl.analysis.step_interventions(tiny_llama, PROMPTS, GOLD, spans,
                                                      modes=("add_noise", "noise", "mean_noise"), seed=seed)
    a, b, c = run(0), run(0), run(1)
    assert a["dlogp_gold"].tolist() == b["dlogp_gold"].tolist()
    assert a["dlogp_gold"].tolist() != c["dlogp_gold"].tolist()


def test_necessity_metrics_by_hand():
    table = pd.DataFrame({"text": [0, 1, 2, 3], "mode": "zero", "step": 0,
                          "correct_before": [True, True, False, False], "correct_after": [False, True, True, False],
                          "dlogp_gold": [-1.0, -2.0, 0.5, 0.5], "dlogp_final": [0.0, 0.0, 0.0, 1.0],
                          "kl": [0.1, 0.2, 0.3, 0.4]})
    row = sl.analysis.necessity_metrics(table).iloc[0]
    assert row["accuracy_before"] == 0.5 and row["accuracy"] == 0.5
    assert row["flip_correct_to_wrong"] == 0.5 and row["flip_wrong_to_correct"] == 0.5
    assert row["dlogp_gold"] == pytest.approx(-0.5) and row["kl"] == pytest.approx(0.25) and row["n"] == 4


def test_bad_spans_and_modes(tiny_llama):
    with pytest.raises(sl.SteerlabError, match="spans"):
        sl.analysis.step_interventions(tiny_llama, PROMPTS, GOLD, [[(0, 99)], [(0, 1)]])
    with pytest.raises(sl.SteerlabError, match="modes"):
        sl.analysis.step_interventions(tiny_llama, PROMPTS, GOLD, [[(0, 1)], [(0, 1)]], modes=("erase",))
