"""Recipe builders and method fitting against hand-written references (tiny models, synthetic data)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

import steerlab as sl
from steerlab.directions import PairActivations
from steerlab.recipes import choose_candidate, condition_scores, f1_grid, plane_from, search_condition_from


# --- builders ---------------------------------------------------------------------------------
def test_caa_adds_alpha_times_the_layer_vector_and_records_provenance():
    d = sl.Direction(torch.randn(3, 8), meta={"method": "mean_diff", "dataset": {"name": "x", "hash": "h"}})
    steering = sl.recipes.caa(d, layer=1, alpha=2.5)
    (add,) = list(steering)
    assert isinstance(add, sl.Add) and add.targets(3)[0].name == "layers.1.resid_post"
    x = torch.randn(2, 4, 8)
    assert torch.allclose(add(x), x + 2.5 * d[1])
    assert steering.meta["recipe"] == "caa" and steering.meta["alpha"] == 2.5
    assert steering.meta["direction"]["dataset"]["hash"] == "h"


def test_activation_addition_and_repe_use_each_layers_own_vector():
    d = sl.Direction(torch.randn(4, 8))
    for steering in (sl.recipes.activation_addition(d, [1, 2], 0.5), sl.recipes.repe(d, [1, 2], 0.5)):
        (add,) = list(steering)
        assert [s.layer for s in add.targets(4)] == [1, 2]
        x = torch.randn(1, 3, 8)
        assert torch.allclose(add(x, site="layers.2.resid_post"), x + 0.5 * d[2])
    assert sl.recipes.repe(d, [1], 1.0).interventions[0].positions == "all"


def test_directional_ablation_removes_the_direction_from_the_residual_stream(tiny_llama):
    torch.manual_seed(0)
    r = torch.randn(tiny_llama.d_model)
    steering = sl.recipes.directional_ablation(r)
    assert [i.site for i in steering] == ["embed", "attn_out", "mlp_out"]
    acts = tiny_llama.capture(["hello there", "a b c"], sites="resid_post", positions="all", steering=steering)
    unit = r / r.norm()
    for layer in range(tiny_llama.n_layers):
        for row in acts[f"layers.{layer}.resid_post"]:
            assert torch.allclose(row @ unit, torch.zeros(len(row)), atol=1e-4)
    plain = tiny_llama.capture(["hello there"], sites="resid_post", layers=[0], positions="all")
    assert (plain["layers.0.resid_post"][0] @ unit).abs().max() > 1e-2   # it was there before


def test_directional_ablation_with_per_layer_vectors_checks_layers():
    d = sl.Direction(torch.randn(3, 8))
    steering = sl.recipes.directional_ablation(d, layers=[1, 2])
    assert [s.layer for s in list(steering)[1].targets(3)] == [1, 2]
    with pytest.raises(sl.SteerlabError, match="holds vectors"):
        sl.recipes.directional_ablation(sl.Direction(torch.randn(2, 8), [0, 1]), layers=[2])


def test_refusal_addition_adds_at_one_layer_input():
    d = sl.Direction({3: torch.ones(8)})
    (add,) = list(sl.recipes.refusal_addition(d, 3, -1.0))
    assert add.targets(5)[0].name == "layers.3.resid_pre"
    x = torch.zeros(1, 2, 8)
    assert torch.allclose(add(x), -torch.ones(1, 2, 8))


def test_selective_rotates_relative_and_keeps_the_norm():
    b1, b2 = torch.tensor([1.0, 0, 0, 0]), torch.tensor([0, 1.0, 0, 0])
    steering = sl.recipes.selective(b1, b2, 90.0, layers=[0, 2])
    assert [i.site for i in steering] == ["attn_in", "mlp_in"]
    x = torch.tensor([[[3.0, 1.0, 2.0, 5.0]]])
    y = steering.interventions[0](x, site="layers.0.attn_in")
    # (a, c) = (3, 1) rotated by +90 degrees -> (-1, 3); the rest is untouched
    assert torch.allclose(y, torch.tensor([[[-1.0, 3.0, 2.0, 5.0]]]), atol=1e-5)
    assert torch.allclose(y.norm(), x.norm())


def test_angular_sets_the_absolute_angle_only_where_the_mask_allows():
    b1, b2 = torch.tensor([1.0, 0, 0]), torch.tensor([0, 1.0, 0])
    rotate = sl.recipes.angular(b1, b2, 90.0).interventions[0]
    x = torch.tensor([[[3.0, 4.0, 1.0], [-3.0, 4.0, 1.0]]])
    y = rotate(x, site="layers.0.attn_in")
    assert torch.allclose(y[0, 0], torch.tensor([0.0, 5.0, 1.0]), atol=1e-5)   # in-plane radius 5, now at 90°
    assert torch.allclose(y[0, 1], x[0, 1])                                    # h·b1 < 0: untouched


def test_fitted_recipe_is_none_at_the_identity_and_stamped_elsewhere():
    fitted = sl.recipes.Fitted("m", "alpha", (0.0, 1.0), lambda a: sl.Steering([sl.Add(torch.ones(4), a)]))
    assert fitted.recipe(0) is None
    r = fitted.recipe(1.0)
    assert r.meta["method"] == "m" and r.meta["strength"] == 1.0 and r.meta["param"] == "alpha"
    with pytest.raises(sl.SteerlabError, match="strength"):
        fitted.recipe("strong")


def test_fitted_recipe_is_none_wherever_build_gives_no_steering():
    # the unsteered baseline of a comparison builds no recipe at any strength (this raised AttributeError)
    baseline = sl.recipes.Fitted("baseline", "none", (0.0,), lambda s: None)
    assert baseline.recipe(0.0) is None
    assert baseline.recipe(2.0) is None


# --- the plane and the discriminative layers (Selective / Angular Steering) ------------------
def test_plane_matches_a_hand_computation_with_sklearn_pca():
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(0)
    base = rng.normal(size=16)
    cands = np.stack([base + 0.5 * rng.normal(size=16) for _ in range(5)] + [rng.normal(size=16)])
    cands[2] *= 7.0                                   # scale does not matter: candidates are normalised
    plane = plane_from(torch.tensor(cands), [f"c{i}" for i in range(6)])
    unit = cands / np.linalg.norm(cands, axis=1, keepdims=True)
    cos = unit @ unit.T
    mean_others = (cos.sum(1) - 1) / 5
    best = int(mean_others.argmax())
    assert plane.source == f"c{best}"
    assert np.allclose(plane.b1.numpy(), unit[best], atol=1e-6)
    pc = PCA(n_components=1).fit(unit).components_[0]
    b2 = pc - (pc @ unit[best]) * unit[best]
    b2 /= np.linalg.norm(b2)
    assert abs(float(plane.b2.numpy() @ b2)) == pytest.approx(1.0, abs=1e-5)
    assert float(plane.b1 @ plane.b2) == pytest.approx(0.0, abs=1e-6)
    assert plane.b2[plane.b2.abs().argmax()] > 0    # the documented sign rule


def test_plane_drops_zero_candidates():
    cands = torch.tensor([[0.0, 0, 0], [1.0, 0.1, 0], [0.9, 0.2, 0.1], [1.0, -0.1, 0.3]])
    plane = plane_from(cands, ["zero", "a", "b", "c"])
    assert "zero" not in plane.names and len(plane.names) == 3


def test_discriminative_layers_need_every_hook_point_of_the_layer():
    b1 = torch.tensor([1.0, 0.0])
    # per layer: positives / negatives as unit-ish vectors; opposite signs along b1 where wanted
    def pair(signs):   # signs[layer] = (sign of positives, sign of negatives)
        pos = torch.stack([torch.tensor([[s[0] * 1.0, 0.5] for s in signs])] * 3)
        neg = torch.stack([torch.tensor([[s[1] * 1.0, 0.5] for s in signs])] * 3)
        return PairActivations(pos, neg)

    acts = {"attn_in": pair([(1, -1), (1, -1), (1, 1)]), "mlp_in": pair([(1, -1), (1, 1), (1, -1)])}
    layers, table = sl.recipes.discriminative_layers(acts, b1)
    assert layers == [0]                          # layer 1 fails at mlp_in, layer 2 at attn_in
    row = table[(table["layer"] == 0) & (table["site"] == "attn_in")].iloc[0]
    assert row["mu_pos"] == pytest.approx(1 / math.sqrt(1.25)) and row["mu_neg"] == pytest.approx(-1 / math.sqrt(1.25))


# --- CAST condition search ---------------------------------------------------------------------
def test_condition_scores_match_the_cast_formula():
    torch.manual_seed(1)
    h, c = torch.randn(5, 6), torch.randn(6)
    cu = c / c.norm()
    target = torch.tanh((h @ cu)[:, None] * cu[None])
    expected = (h * target).sum(-1) / (h.norm(dim=-1) * target.norm(dim=-1))
    assert torch.allclose(condition_scores(h, c), expected, atol=1e-6)


def test_f1_grid_by_hand():
    scores = torch.tensor([0.9, 0.8, 0.3, 0.1])
    labels = torch.tensor([True, False, True, False])
    f1 = f1_grid(scores, labels, torch.tensor([0.5, 0.2, 0.95]), ">")
    # t=0.5: fires {0.9, 0.8}: tp 1 fp 1 fn 1 -> 2/4; t=0.2: tp 2 fp 1 fn 0 -> 4/5; t=0.95: none fire -> 0
    assert f1.tolist() == pytest.approx([0.5, 0.8, 0.0])


def test_condition_search_finds_the_separating_layer_and_the_middle_threshold():
    c = torch.tensor([1.0, 0.0, 0.0])
    # layer 0: no signal; layer 1: "fire" prompts point along c, "quiet" ones orthogonal
    fire = torch.stack([torch.tensor([[0.0, 1.0, 0.0], [2.0, 0.1, 0.0]]) for _ in range(4)])
    quiet = torch.stack([torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.3, 1.0]]) for _ in range(4)])
    vectors = torch.stack([c, c])
    fit = search_condition_from(fire, quiet, vectors, layers=[5, 6], thresholds=[i / 100 for i in range(101)])
    assert fit.layer == 6 and fit.comparator == ">" and fit.f1 == pytest.approx(1.0)
    s_fire = float(condition_scores(torch.tensor([[2.0, 0.1, 0.0]]), c))
    s_quiet = float(condition_scores(torch.tensor([[0.0, 0.3, 1.0]]), c))
    assert s_quiet <= fit.threshold < s_fire
    perfect = [t for t in (i / 100 for i in range(101)) if s_quiet <= t < s_fire]
    assert fit.threshold == perfect[len(perfect) // 2]
    assert list(fit.table["layer"]) == [5, 6] and fit.table["f1"].iloc[0] < 1


def test_condition_search_breaks_ties_towards_the_earlier_layer_then_greater_than():
    # every prompt has the same state at both layers, scoring about 0.71 against c: firing on all of them
    # (F1 = 2/3) is the best either comparator can do, at both layers
    same = torch.tensor([[1.0, 1.0], [1.0, 1.0]])
    fire, quiet = torch.stack([same] * 3), torch.stack([same] * 3)
    fit = search_condition_from(fire, quiet, torch.tensor([[1.0, 0.0], [1.0, 0.0]]), layers=[3, 4])
    assert fit.layer == 3 and fit.comparator == ">"
    assert fit.f1 == pytest.approx(2 / 3)
    assert list(fit.table["comparator"]) == [">", ">"]


def test_condition_search_with_no_layer_is_a_clear_error():
    fire, quiet = torch.ones(2, 1, 3), torch.zeros(2, 1, 3)
    with pytest.raises(sl.SteerlabError, match="layers is empty"):
        search_condition_from(fire, quiet, torch.ones(1, 3), layers=[])


# --- refusal-direction selection rule (Arditi et al.) -----------------------------------------
def test_choose_candidate_applies_the_filters_then_the_lowest_bypass():
    table = pd.DataFrame({"layer": [0, 1, 2, 3, 9], "bypass": [-1.0, -5.0, -3.0, -2.0, -9.0],
                          "induce": [1.0, -0.5, 0.2, 0.3, 2.0], "kl": [0.01, 0.01, 0.05, 0.5, 0.01]})
    layer, relaxed, eligible = choose_candidate(table, n_layers=10)
    # layer 9 is too deep, layer 1 fails induce, layer 3 fails KL: best of {0, 2} by bypass is 2
    assert layer == 2 and relaxed == [] and eligible.tolist() == [True, False, True, False, False]


def test_choose_candidate_relaxes_kl_then_induce():
    table = pd.DataFrame({"layer": [0, 1], "bypass": [-1.0, -2.0], "induce": [1.0, 1.0], "kl": [0.5, 0.9]})
    assert choose_candidate(table, 10)[:2] == (1, ["kl"])
    table["induce"] = [-1.0, -2.0]
    assert choose_candidate(table, 10)[:2] == (1, ["kl", "induce"])


def test_logit_scores_by_hand():
    logits = torch.tensor([[1.0, 2.0, 0.5, -1.0]])
    p = torch.softmax(logits, -1)[0]
    r = p[[1, 3]].sum()
    assert float(sl.recipes.refusal_score(logits, [1, 3])) == pytest.approx(float(torch.log(r / (1 - r))), abs=1e-6)
    assert float(sl.recipes.contrast_score(logits, [0], [2, 3])) == pytest.approx(
        float(torch.log(p[0] / (p[2] + p[3]))), abs=1e-6)


def test_select_direction_scores_match_a_hand_run(tiny_llama, tokenizer):
    torch.manual_seed(0)
    cands = sl.Direction(torch.randn(3, tiny_llama.d_model), meta={"method": "mean_diff"})
    score = sl.recipes.LogitScore("test", sl.recipes.token_ids(tokenizer, ["a", "b"]), None, chat=False)
    pos, neg = ["abc", "a b"], ["xyz", "q"]
    sel = sl.recipes.select_direction(tiny_llama, cands, pos, neg, score, max_layer_frac=1.0, kl_max=10.0)
    assert list(sel.table["layer"]) == [0, 1, 2]
    row = sel.table[sel.table["layer"] == 1].iloc[0]
    ablate = sl.recipes.directional_ablation(cands[1])
    by_hand = float(score(tiny_llama.logits(pos, steering=ablate)).mean())
    assert row["bypass"] == pytest.approx(by_hand, abs=1e-4)
    add = sl.Steering([sl.Add(cands[1], 1.0, layers=[1], site="resid_pre")])
    assert row["induce"] == pytest.approx(float(score(tiny_llama.logits(neg, steering=add)).mean()), abs=1e-4)
    assert sel.layer in (0, 1, 2) and sel.direction.layers == [sel.layer]


# --- fitting every method -------------------------------------------------------------------
def _tiny_pairs():
    pos = [f"good {w} day" for w in "abcdefghij"]
    neg = [f"bad {w} day!" for w in "abcdefghij"]
    return sl.data.ContrastiveSet(pos, neg, "tiny")


def test_every_method_fits_and_its_recipes_generate(tiny_llama, tokenizer):
    pairs = _tiny_pairs()
    ctx = sl.recipes.FitContext(tiny_llama, pairs, score=sl.recipes.LogitScore(
        "t", sl.recipes.token_ids(tokenizer, ["g"]), sl.recipes.token_ids(tokenizer, ["b"])), condition=pairs)
    for name in sl.recipes.method_names():
        spec = sl.recipes.spec(name)
        try:
            fitted = sl.recipes.fit(tiny_llama, name, context=ctx)
        except sl.SteerlabError as e:     # a random tiny model may have no discriminative layer
            assert name == "selective" and "discriminative" in str(e)
            continue
        assert fitted.param == spec.param and fitted.strengths == spec.strengths
        recipes = [fitted.recipe(s) for s in fitted.strengths]
        assert (recipes[0] is None) == (fitted.identity == fitted.strengths[0])
        steered = [r for r in recipes if r is not None]
        out = tiny_llama.generate(["hi"] * len(steered), steering=steered, max_new_tokens=2)
        assert len(out.texts) == len(steered)
        assert all(r.meta["method"] == name for r in steered)


def test_unknown_method_and_empty_strengths_are_clear_errors(tiny_llama):
    with pytest.raises(sl.SteerlabError, match="not known"):
        sl.recipes.fit(tiny_llama, "magic", _tiny_pairs())
    with pytest.raises(sl.SteerlabError, match="empty"):
        sl.recipes.fit(tiny_llama, "add", _tiny_pairs(), strengths=[])
