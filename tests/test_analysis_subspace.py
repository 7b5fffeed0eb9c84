"""Subspace-illusion check: the split, a hand patch, and a constructed illusion vs a faithful direction."""

from __future__ import annotations

import pytest
import torch

import steerlab as sl
from analysis_refs import hooked, last_logits
from steerlab.analysis.subspace import split_direction

BASE, SOURCE = "hello world", "jello wormd"
LAYER = 2


def _tok(model, c):
    return model.tokenizer(c, add_special_tokens=False)["input_ids"][0]


def _neurons(model, text):
    store = {}

    def keep(x):
        store["h"] = x[0, -1].detach().clone()
        return x

    with hooked(model.hf_model.model.layers[LAYER].mlp.down_proj, keep, pre=True):
        last_logits(model, text)
    return store["h"]


def _projector(model):
    w = model.hf_model.model.layers[LAYER].mlp.down_proj.weight.detach()  # [d, d_mlp]
    q, _ = torch.linalg.qr(w.T)  # orthonormal basis of the row space (rank d)
    return q @ q.T


def test_split_direction_parts():
    torch.manual_seed(0)
    reader = torch.randn(4, 10)
    v = torch.randn(10)
    row, null = split_direction(v, reader)
    assert torch.allclose(row + null, v, atol=1e-6)
    assert (reader @ null).abs().max() < 1e-5
    assert abs(float(row @ null)) < 1e-5
    with pytest.raises(sl.SteerlabError, match="width"):
        split_direction(torch.randn(9), reader)


def _metric(model, logits):
    return float(logits[_tok(model, "x")] - logits[_tok(model, "y")])


def test_direction_patch_matches_a_hand_patch_and_null_part_does_nothing(tiny_llama):
    model = tiny_llama
    torch.manual_seed(1)
    v = torch.randn(model.d_mlp)
    check = sl.analysis.subspace_check(model, BASE, SOURCE, v, LAYER, answers=("x", "y"))
    table = check.table.set_index("part")
    src = _neurons(model, SOURCE)
    v_hat = v / v.norm()

    def patch(x):
        y = x.clone()
        y[0, -1] = x[0, -1] + ((src - x[0, -1]) @ v_hat) * v_hat
        return y

    with hooked(model.hf_model.model.layers[LAYER].mlp.down_proj, patch, pre=True):
        patched = _metric(model, last_logits(model, BASE))
    base = _metric(model, last_logits(model, BASE))
    assert table.loc["direction", "effect"] == pytest.approx(patched - base, abs=1e-4)
    assert abs(table.loc["null_space", "effect"]) < 1e-4  # W_down never reads the null-space part
    assert table.loc["component", "normalized"] == pytest.approx(
        _component_effect(model) / (_metric(model, last_logits(model, SOURCE)) - base), abs=1e-4)


def _component_effect(model):
    src = _neurons(model, SOURCE)

    def patch(x):
        y = x.clone()
        y[0, -1] = src
        return y

    base = _metric(model, last_logits(model, BASE))
    with hooked(model.hf_model.model.layers[LAYER].mlp.down_proj, patch, pre=True):
        return _metric(model, last_logits(model, BASE)) - base


def test_constructed_illusion_is_flagged_and_a_faithful_direction_is_not(tiny_llama):
    model = tiny_llama
    delta = _neurons(model, SOURCE) - _neurons(model, BASE)
    p_row = _projector(model)
    null_diff = delta - p_row @ delta  # the difference the model cannot read
    row_diff = p_row @ delta
    w_u = model.hf_model.lm_head.weight.detach()
    w_down = model.hf_model.model.layers[LAYER].mlp.down_proj.weight.detach()
    readable = p_row @ (w_down.T @ (w_u[_tok(model, "x")] - w_u[_tok(model, "y")]))
    dormant = readable - (readable @ row_diff) / (row_diff @ row_diff) * row_diff  # row space, no difference along it
    v = null_diff / null_diff.norm() + dormant / dormant.norm()
    check = sl.analysis.subspace_check(model, BASE, SOURCE, v, LAYER, answers=("x", "y"))
    table = check.table.set_index("part")
    assert abs(table.loc["row_space", "effect"]) < 1e-4  # the dormant part alone moves nothing
    assert abs(table.loc["direction", "normalized"]) > 0.2
    assert check.illusion, check.reasons

    faithful = sl.analysis.subspace_check(model, BASE, SOURCE, row_diff, LAYER, answers=("x", "y"))
    assert not faithful.illusion
    ft = faithful.table.set_index("part")
    assert ft.loc["row_space", "effect"] == pytest.approx(ft.loc["direction", "effect"], abs=1e-4)


def test_residual_sites_need_a_reader(tiny_llama):
    with pytest.raises(sl.SteerlabError, match="reader"):
        sl.analysis.subspace_check(tiny_llama, BASE, SOURCE, torch.randn(tiny_llama.d_model), 1, site="resid_post",
                                   gold="x")
    reader = torch.randn(8, tiny_llama.d_model)
    check = sl.analysis.subspace_check(tiny_llama, BASE, SOURCE, torch.randn(tiny_llama.d_model), 1,
                                       site="resid_post", gold="x", reader=reader)
    assert list(check.table["part"]) == ["direction", "row_space", "null_space", "component"]
