"""Tests for steerlab.directions: estimators against hand computations, sweep, layer choice, errors."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression

import steerlab as sl
from steerlab.data.contrastive import ContrastiveSet
from steerlab.directions import (
    Direction,
    PairActivations,
    capture_pairs,
    class_alignment,
    cohens_d,
    mean_diff,
    mean_diff_from,
    pca,
    pca_from,
    probe,
    probe_from,
    probe_score,
    recommend_layers,
    sweep,
    sweep_from,
)
from steerlab.errors import DataError, ShapeError, SiteError, SteerlabError

TOY = ContrastiveSet(["I love this film", "a great day out", "wonderful food", "so happy now", "kind people"],
                     ["I hate this film", "an awful day out", "terrible food", "so sad now", "cruel people"],
                     name="toy")


def planted(n=60, layers=2, d=16, seed=0, spread=10.0):
    """Pairs sharing a large random "content" part; the positive adds ``+a_i u``, the negative ``-a_i u``."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(d, generator=g, dtype=torch.float64)
    u /= u.norm()
    base = spread * torch.randn(n, layers, d, generator=g, dtype=torch.float64)
    a = 0.5 + 2.5 * torch.rand(n, 1, 1, generator=g, dtype=torch.float64)
    noise = lambda: 0.05 * torch.randn(n, layers, d, generator=g, dtype=torch.float64)
    return base + a * u + noise(), base - a * u + noise(), u


def hand_split(n, test, seed):
    order = list(range(n))
    random.Random(seed).shuffle(order)
    cut = max(1, min(n - 1, round(n * (1 - test))))
    return order[:cut], order[cut:]


# --- mean difference ---------------------------------------------------------------------------
@pytest.mark.parametrize("positions,site", [("last", "resid_post"), ("mean", "mlp_out")])
def test_mean_diff_equals_hand_computation_from_capture(tiny_llama, positions, site):
    d = mean_diff(tiny_llama, TOY, layers=[0, 2], positions=positions, site=site)
    assert d.layers == [0, 2]
    pos = tiny_llama.capture(TOY.positive, sites=site, layers=[0, 2], positions=positions)
    neg = tiny_llama.capture(TOY.negative, sites=site, layers=[0, 2], positions=positions)
    for layer in (0, 2):
        name = f"layers.{layer}.{site}"
        hand = pos[name].double().sum(0) / len(TOY) - neg[name].double().sum(0) / len(TOY)
        torch.testing.assert_close(d[layer].double(), hand, atol=1e-5, rtol=1e-5)
    assert d.meta["positions"] == positions and d.meta["site"] == site


def test_mean_diff_from_handles_unequal_counts_and_one_layer():
    pos = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 0.0]])
    neg = torch.tensor([[0.0, 1.0]])
    assert torch.allclose(mean_diff_from(pos, neg), torch.tensor([3.0, 1.0], dtype=torch.float64))
    both = mean_diff_from(torch.stack([pos, 2 * pos], 1), torch.stack([neg, 2 * neg], 1))
    assert both.shape == (2, 2) and torch.allclose(both[1], torch.tensor([6.0, 2.0], dtype=torch.float64))


def test_provenance_fields(tiny_llama):
    acts = capture_pairs(tiny_llama, TOY)
    for direction, method in [(mean_diff(tiny_llama, TOY, acts=acts), "mean_diff"),
                              (pca(tiny_llama, TOY, acts=acts), "pca_diff"),
                              (probe(tiny_llama, TOY, acts=acts, test=0.4), "probe")]:
        meta = direction.meta
        assert meta["model"] == tiny_llama.fingerprint
        assert meta["method"] == method and meta["site"] == "resid_post" and meta["positions"] == "last"
        assert meta["dataset"] == TOY.describe()
        assert meta["created"] and meta["version"] == sl.__version__
        assert direction.layers == [0, 1, 2]
        if method != "mean_diff":
            assert set(meta["scores"]) == {0, 1, 2}


def test_save_load_round_trip(tiny_llama, tmp_path):
    d = mean_diff(tiny_llama, TOY, layers=[1, 2])
    back = Direction.load(d.save(tmp_path / "toy.direction"), model=tiny_llama)
    assert back.layers == d.layers and back.meta == d.meta
    for layer in d.layers:
        assert torch.equal(back[layer], d[layer])
    p = probe(tiny_llama, TOY, test=0.4)
    back = Direction.load(p.save(tmp_path / "probe.direction"))
    assert back.meta["scores"] == p.meta["scores"] and back.meta["intercept"] == p.meta["intercept"]
    x = torch.randn(3, tiny_llama.d_model)
    assert torch.allclose(probe_score(back, x, 2), probe_score(p, x, 2))


# --- PCA ---------------------------------------------------------------------------------------
def test_pca_recovers_planted_direction_and_matches_sklearn():
    pos, neg, u = planted()
    fit = pca_from(pos, neg)
    for j in range(2):
        v = fit.vectors[j]
        assert abs(v.norm() - 1) < 1e-9
        assert v @ u > 0.99                       # right direction, right sign
        diff = (pos[:, j] - neg[:, j]).numpy()
        ref = PCA(n_components=1).fit(diff)
        comp = torch.from_numpy(ref.components_[0])
        assert abs(abs(float(comp @ v)) - 1) < 1e-9
        assert abs(float(fit.explained[j]) - ref.explained_variance_ratio_[0]) < 1e-9
    flipped = pca_from(neg, pos)                  # swapping the classes flips the sign
    assert torch.allclose(flipped.vectors, -fit.vectors)


def test_pca_sign_follows_majority_of_pairs():
    # Differences along e0: four pairs +1..+4 (positive above negative), one pair -20. The component is
    # e0 either way; the majority of pairs (4 of 5) says the positive side is +e0.
    diffs = torch.tensor([[1.0, 0.0], [2.0, 0.1], [3.0, -0.1], [4.0, 0.0], [-20.0, 0.0]], dtype=torch.float64)
    fit = pca_from(diffs, torch.zeros_like(diffs))
    assert fit.vectors[0] > 0.99
    assert abs(float(fit.agreement) - 0.8) < 1e-12


def test_pca_center_and_uncentred_match_hand_computations():
    pos, neg, u = planted(n=30, layers=1, d=8, seed=3)
    pos, neg = pos[:, 0], neg[:, 0]
    mid = (pos + neg) / 2
    rows = torch.cat([pos - mid, neg - mid]).numpy()
    ref = torch.from_numpy(PCA(n_components=1).fit(rows).components_[0])
    fit = pca_from(pos, neg, method="pca_center")
    assert abs(abs(float(ref @ fit.vectors)) - 1) < 1e-9 and fit.vectors @ u > 0.99
    _, _, vt = np.linalg.svd((pos - neg).numpy(), full_matrices=False)
    raw = pca_from(pos, neg, center=False)
    assert abs(abs(float(torch.from_numpy(vt[0]) @ raw.vectors)) - 1) < 1e-9
    d = pca(None, None, method="pca_center", acts=PairActivations(pos, neg))
    assert d.meta["method"] == "pca_center" and torch.allclose(d[0].double(), fit.vectors, atol=1e-6)


# --- probe -------------------------------------------------------------------------------------
def separable(n, d=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    u = torch.zeros(d, dtype=torch.float64)
    u[0] = 1.0
    x = torch.randn(2 * n, d, generator=g, dtype=torch.float64) * torch.linspace(0.5, 5.0, d, dtype=torch.float64)
    x += 3.0  # an offset, so the intercept matters
    return x[:n] + 4.0 * u, x[n:] - 4.0 * u


def test_probe_separable_data_and_vector_classifies_new_data():
    pos, neg = separable(80)
    fit = probe_from(pos, neg, test=0.25, seed=1)
    assert fit.accuracy == 1.0 and fit.n_test == 40
    new_pos, new_neg = separable(200, seed=7)
    score_pos, score_neg = new_pos @ fit.coef + fit.intercept, new_neg @ fit.coef + fit.intercept
    assert ((score_pos > 0).double().mean() + (score_neg < 0).double().mean()) / 2 > 0.97
    # The raw-space coefficients reproduce a probe fit by hand on z-scored training data.
    train, _ = hand_split(80, 0.25, 1)
    x = torch.cat([pos[train], neg[train]]).numpy()
    y = np.r_[np.ones(len(train)), np.zeros(len(train))]
    mu, sd = x.mean(0), x.std(0)
    ref = LogisticRegression(max_iter=5000).fit((x - mu) / sd, y)
    probe_x = torch.cat([new_pos, new_neg]).numpy()
    expected = ref.decision_function((probe_x - mu) / sd)
    got = (torch.from_numpy(probe_x) @ fit.coef + fit.intercept).numpy()
    assert np.allclose(got, expected, atol=1e-3 * np.abs(expected).max())


def test_probe_direction_meta_and_score():
    pos, neg = separable(40)
    acts = PairActivations(torch.stack([pos, pos], 1), torch.stack([neg, neg], 1), layers=[3, 7], n_layers=8)
    d = probe(None, None, acts=acts, test=0.25)
    assert d.layers == [3, 7] and d.meta["scores"] == {3: 1.0, 7: 1.0} and d.meta["score"] == "heldout_accuracy"
    assert (probe_score(d, pos.float(), 3) > 0).all() and (probe_score(d, neg.float(), 7) < 0).all()
    everything = probe(None, None, acts=acts, test=0)
    assert everything.meta["n_test"] == 0 and everything.meta["score"] == "train_accuracy"


# --- sweep -------------------------------------------------------------------------------------
def sweep_data(n=40, d=10, seed=0):
    """Layer 0: both classes on the same side along u. Layer 1: opposite sides. Layer 2: no signal."""
    g = torch.Generator().manual_seed(seed)
    c, u = torch.zeros(d, dtype=torch.float64), torch.zeros(d, dtype=torch.float64)
    c[1], u[0] = 3.0, 1.0
    noise = lambda: 0.7 * torch.randn(n, d, generator=g, dtype=torch.float64)
    pos = torch.stack([c + 2 * u + noise(), c + u + noise(), noise()], 1)
    neg = torch.stack([c + 1 * u + noise(), c - u + noise(), noise()], 1)
    return pos, neg


def test_sweep_columns_and_values_by_hand():
    pos, neg = sweep_data()
    table = sweep_from(pos, neg, layers=[4, 5, 6], test=0.25, seed=0)
    assert list(table.columns[:8]) == ["layer", "probe_acc", "diff_acc", "cohens_d", "mu_pos", "mu_neg",
                                       "opposite_sign", "norm"]
    assert table["layer"].tolist() == [4, 5, 6]
    train, held = hand_split(40, 0.25, 0)
    for j, row in table.iterrows():
        p, n = pos[:, j].numpy(), neg[:, j].numpy()
        unit = p[train].mean(0) - n[train].mean(0)
        unit /= np.linalg.norm(unit)
        a, b = p[held] @ unit, n[held] @ unit
        pooled = math.sqrt(((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2))
        assert row["cohens_d"] == pytest.approx((a.mean() - b.mean()) / pooled, rel=1e-9)
        cut = ((p[train] @ unit).mean() + (n[train] @ unit).mean()) / 2
        assert row["diff_acc"] == pytest.approx(((a > cut).sum() + (b < cut).sum()) / (2 * len(held)))
        b1 = p.mean(0) - n.mean(0)
        assert row["norm"] == pytest.approx(np.linalg.norm(b1), rel=1e-9)
        b1 /= np.linalg.norm(b1)
        mu_pos = (p / np.linalg.norm(p, axis=1, keepdims=True) @ b1).mean()
        mu_neg = (n / np.linalg.norm(n, axis=1, keepdims=True) @ b1).mean()
        assert row["mu_pos"] == pytest.approx(mu_pos, rel=1e-9) and row["mu_neg"] == pytest.approx(mu_neg, rel=1e-9)
        assert row["opposite_sign"] == (mu_pos * mu_neg < 0)
    assert table["opposite_sign"].tolist()[:2] == [False, True]
    assert table["probe_acc"][1] > 0.85 and table["probe_acc"][2] < 0.8
    x = np.concatenate([pos[train, 1].numpy(), neg[train, 1].numpy()])
    mu, sd = x.mean(0), x.std(0)
    ref = LogisticRegression(max_iter=5000).fit((x - mu) / sd, np.r_[np.ones(30), np.zeros(30)])
    xt = np.concatenate([pos[held, 1].numpy(), neg[held, 1].numpy()])
    labels = np.r_[np.ones(10), np.zeros(10)]
    assert table["probe_acc"][1] == pytest.approx((ref.predict((xt - mu) / sd) == labels).mean())


def test_cohens_d_and_alignment_against_hand_formulas():
    # a = [1, 2, 3]: mean 2, var 1; b = [0, 1]: mean 0.5, var 0.5; pooled = sqrt((2*1 + 1*0.5) / 3).
    assert cohens_d([1.0, 2.0, 3.0], [0.0, 1.0]) == pytest.approx(1.5 / math.sqrt(2.5 / 3))
    assert math.isnan(cohens_d([1.0], [0.0]))
    assert cohens_d([1.0, 1.0], [0.0, 0.0]) == math.inf
    mu_pos, mu_neg = class_alignment([[3.0, 4.0], [0.0, 2.0]], [[-1.0, 0.0]], [2.0, 0.0])
    assert mu_pos == pytest.approx((0.6 + 0.0) / 2) and mu_neg == pytest.approx(-1.0)


def test_sweep_on_model_shares_one_capture(tiny_llama):
    acts = capture_pairs(tiny_llama, TOY, layers=[1, 2])
    table = sweep(tiny_llama, TOY, acts=acts, test=0.4)
    direct = sweep(tiny_llama, TOY, layers=[1, 2], test=0.4)
    assert table["layer"].tolist() == [1, 2] and table.attrs["n_layers"] == 3
    pd.testing.assert_frame_equal(table, direct, atol=1e-5, rtol=1e-4)
    assert np.allclose(table["norm"], [mean_diff(tiny_llama, TOY, acts=acts)[layer].norm() for layer in (1, 2)],
                       rtol=1e-5)


# --- recommend_layers --------------------------------------------------------------------------
def table_of(acc, opposite=None, n_layers=None):
    t = pd.DataFrame({"layer": range(len(acc)), "probe_acc": acc,
                      "opposite_sign": opposite if opposite is not None else [True] * len(acc)})
    if n_layers:
        t.attrs["n_layers"] = n_layers
    return t


def test_recommend_layers_picks_the_accurate_middle_band():
    acc = [0.5] * 30
    for layer, a in zip(range(9, 16), [0.6, 0.93, 0.95, 0.97, 0.96, 0.93, 0.55]):
        acc[layer] = a
    assert recommend_layers(table_of(acc)) == [10, 11, 12, 13, 14]          # within 0.05 of 0.97
    assert recommend_layers(table_of(acc), margin=0.015) == [12, 13]
    assert recommend_layers(table_of(acc), k=2) == [12, 13]                  # best 2-window by mean acc
    assert recommend_layers(table_of(acc), k=7) == [9, 10, 11, 12, 13, 14, 15]  # grown: 9 (0.6), then 15
    acc[9] = acc[15] = 0.5
    assert recommend_layers(table_of(acc), k=6) == [10, 11, 12, 13, 14, 15]  # tie: keep nearer the middle 14.5
    opposite = [True] * 30
    opposite[10] = opposite[11] = False
    assert recommend_layers(table_of(acc, opposite)) == [12, 13, 14]
    assert recommend_layers(table_of(acc, opposite), require_opposite_sign=False) == [10, 11, 12, 13, 14]
    assert recommend_layers(table_of(acc, [False] * 30)) == [10, 11, 12, 13, 14]  # nobody passes: ignore


def test_recommend_layers_prefers_middle_then_longest_run():
    acc = [0.5] * 30
    for layer in (26, 27, 28, 29):
        acc[layer] = 1.0                       # late layers read best ...
    for layer in (12, 13):
        acc[layer] = 0.97                      # ... but the middle is within the margin
    assert recommend_layers(table_of(acc)) == [12, 13]
    assert recommend_layers(table_of(acc), band=(0.0, 1.0)) == [26, 27, 28, 29]
    acc = [0.5] * 30
    for layer in (8, 9, 15, 16, 17):
        acc[layer] = 0.9
    assert recommend_layers(table_of(acc)) == [15, 16, 17]
    acc = [0.5] * 30
    for layer in (8, 9, 14, 15):
        acc[layer] = 0.9
    assert recommend_layers(table_of(acc)) == [14, 15]              # equal runs: nearest the middle (14.5)
    sparse = pd.DataFrame({"layer": [0, 4, 8, 12, 16], "probe_acc": [0.5, 0.9, 0.92, 0.6, 0.5]})
    assert recommend_layers(sparse, n_layers=20) == [4, 8]         # adjacent in the table
    assert recommend_layers(sparse, k=10) == [0, 4, 8, 12, 16]


def test_recommend_layers_errors():
    with pytest.raises(DataError, match="non-empty"):
        recommend_layers(pd.DataFrame())
    with pytest.raises(DataError, match="probe_acc"):
        recommend_layers(pd.DataFrame({"layer": [0, 1]}))
    with pytest.raises(SteerlabError, match="k=0"):
        recommend_layers(table_of([0.5, 0.9]), k=0)
    with pytest.raises(SteerlabError, match="band"):
        recommend_layers(table_of([0.5, 0.9]), band=(0.9, 0.1))


# --- errors ------------------------------------------------------------------------------------
def test_bad_input_errors(tiny_llama):
    with pytest.raises(DataError, match="ContrastiveSet"):
        mean_diff(tiny_llama, ["a", "b"])  # a (positive, negative) tuple is fine; a flat list is not
    with pytest.raises(DataError, match="negative side"):
        mean_diff(tiny_llama, (["a"], []))
    with pytest.raises(DataError, match="empty"):
        ContrastiveSet([], [])
    with pytest.raises(SiteError, match="layer 5 is out of range"):
        mean_diff(tiny_llama, TOY, layers=[5])
    with pytest.raises(SiteError, match="site='resid'"):
        pca(tiny_llama, TOY, site="resid")
    with pytest.raises(SiteError, match="attn.heads"):
        mean_diff(tiny_llama, TOY, site="attn.heads")
    with pytest.raises(SiteError, match="layers="):
        mean_diff(tiny_llama, TOY, site="layers.1.resid_post")
    with pytest.raises(SteerlabError, match="positions='all'"):
        probe(tiny_llama, TOY, positions="all")
    one = ContrastiveSet(["good"], ["bad"])
    with pytest.raises(DataError, match="at least 2"):
        probe(tiny_llama, one, test=0.25)
    with pytest.raises(DataError, match="test=1.5"):
        sweep(tiny_llama, TOY, test=1.5)
    acts = capture_pairs(tiny_llama, TOY, layers=[1])
    with pytest.raises(SteerlabError, match="captured at 'resid_post'"):
        mean_diff(tiny_llama, TOY, site="mlp_out", acts=acts)
    with pytest.raises(SiteError, match="layer 2 was not captured"):
        mean_diff(tiny_llama, TOY, layers=[2], acts=acts)
    with pytest.raises(DataError, match="not on these pairs"):
        mean_diff(tiny_llama, one, acts=acts)
    with pytest.raises(SteerlabError, match="method='svd'"):
        pca_from(torch.ones(3, 4), torch.zeros(3, 4), method="svd")
    with pytest.raises(ShapeError, match="needs pairs"):
        pca_from(torch.ones(3, 4), torch.zeros(2, 4))
    with pytest.raises(ShapeError, match="must match"):
        mean_diff_from(torch.ones(3, 4), torch.zeros(3, 5))
    with pytest.raises(DataError, match="at least one"):
        mean_diff_from(torch.ones(0, 4), torch.zeros(3, 4))
    with pytest.raises(SteerlabError, match="needs a probe direction"):
        probe_score(mean_diff(tiny_llama, TOY, acts=acts), torch.ones(2, tiny_llama.d_model), 1)


# --- end to end on the embedded model ----------------------------------------------------------
def sentiment_pairs() -> ContrastiveSet:
    path = Path(sl.__file__).parent / "data" / "bundled" / "sentiment.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return ContrastiveSet([r["positive"] for r in rows], [r["negative"] for r in rows], name="sentiment")


@pytest.mark.slow
def test_sentiment_is_linearly_readable_in_middle_layers(smollm):
    pairs = sentiment_pairs()
    acts = capture_pairs(smollm, pairs, layers=[3, 6, 9, 12])  # the forward pass stops after layer 12
    table = sweep(smollm, pairs, acts=acts, test=0.25, seed=0)
    middle = table[table["layer"].between(6, 12)]
    assert middle["probe_acc"].max() > 0.8, table
    chosen = recommend_layers(table)
    assert chosen and set(chosen) <= set(table["layer"])
    d = mean_diff(smollm, pairs, acts=acts)
    assert d.meta["dataset"]["pairs"] == len(pairs) and d.d_model == smollm.d_model


# --- one probe type ----------------------------------------------------------------------------
def test_a_fitted_probe_direction_reads_as_a_probe(tiny_llama, tmp_path):
    p = probe(tiny_llama, TOY, layers=[1, 2], test=0)
    as_analysis = sl.analysis.as_probe(p)  # raised TypeError when the two probe types had drifted
    assert as_analysis.weights.keys() == {1, 2} and as_analysis.layer == 1
    assert as_analysis.biases == {layer: pytest.approx(p.meta["intercept"][layer]) for layer in (1, 2)}
    acts = capture_pairs(tiny_llama, TOY, layers=[1, 2])
    x = torch.cat([acts.positive[:, 1], acts.negative[:, 1]]).float()
    y = torch.tensor([1] * len(TOY) + [0] * len(TOY))
    logit = as_analysis.score(x, 2)
    assert torch.allclose(logit, x @ p[2] + p.meta["intercept"][2], atol=1e-4)  # the probe's own definition
    assert torch.allclose(logit, probe_score(p, x, 2), atol=1e-5)
    accuracy = float(((logit > 0).long() == y).float().mean())
    assert accuracy == pytest.approx(p.meta["scores"][2])  # test=0: the training accuracy it reports
    assert sl.analysis.Probe is sl.directions.Probe
    back = sl.directions.as_probe(Direction.load(p.save(tmp_path / "p.direction")), layer=2)
    assert back.layer == 2 and back.biases == as_analysis.biases


def test_a_probe_round_trips_through_a_direction():
    w = {3: torch.tensor([1.0, -2.0]), 4: torch.tensor([0.5, 0.5])}
    original = sl.directions.Probe(w, {3: 0.25, 4: -1.0}, layer=4, site="resid_mid")
    back = sl.directions.as_probe(original.to_direction())
    assert back.layer == 4 and back.site == "resid_mid" and back.biases == {3: 0.25, 4: -1.0}
    h = torch.tensor([[2.0, 1.0]])
    assert torch.allclose(back.score(h, 3), torch.tensor([0.25]))  # 2 - 2 + 0.25
    plain = Direction({0: torch.ones(2)})  # not a probe: bias 0
    assert sl.directions.as_probe(plain).biases == {0: 0.0}
