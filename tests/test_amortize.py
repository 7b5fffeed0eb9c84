"""Amortized steering (CASAL-style) against a hand-written least-squares fit on a tiny model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import steerlab as sl
from steerlab.edit.amortize import regression
from tiny import tiny_model

TEXTS = ["the cat sat on the mat", "a dog barked twice", "hello world, again and again", "steer me gently",
         "one more text to fit", "numbers 1 2 3 4 5 6", "the quick brown fox", "jumps over the lazy dog"]


def _hand_data(model, v, alpha, layer):
    """Per token: the MLP's hidden activations and the norm-matched addition's residual change, by hand."""
    hf = model.hf_model
    neurons: list[torch.Tensor] = []
    handle = hf.model.layers[layer].mlp.down_proj.register_forward_hook(
        lambda m, i, o: neurons.append(i[0][0].detach().clone()))
    residuals = []
    try:
        for t in TEXTS:
            with torch.no_grad():
                h = hf(torch.tensor([model.tokenizer(t)["input_ids"]]), output_hidden_states=True).hidden_states[
                    layer + 1][0]
            y = h + alpha * v
            y = y * h.norm(dim=-1, keepdim=True) / y.norm(dim=-1, keepdim=True)
            residuals.append(y - h)
    finally:
        handle.remove()
    return torch.cat(neurons).double().numpy(), torch.cat(residuals).double().numpy()


def test_amortize_fits_the_down_projection_like_hand_least_squares(tiny_llama):
    model, layer = tiny_llama, 1
    v = torch.randn(64, generator=torch.Generator().manual_seed(0))
    recipe = sl.Steering([sl.Add(v, alpha=2.0, layers=[layer], norm_match=True)])
    out = sl.edit.amortize(model, recipe, TEXTS, rank=None, ridge=1e-3)
    n, r = _hand_data(model, v, 2.0, layer)
    x = np.concatenate([n, np.ones((len(n), 1))], 1)   # ridge on the weight only, the bias free
    nc = n - n.mean(0)
    lam = 1e-3 * np.diag(nc.T @ nc).mean()
    reg = np.eye(x.shape[1]) * lam
    reg[-1, -1] = 0
    beta = np.linalg.solve(x.T @ x + reg, x.T @ r)
    old = model.hf_model.model.layers[layer].mlp.down_proj.weight.detach().double().numpy()
    new_mod = out.model.model.layers[layer].mlp.down_proj
    assert np.allclose(new_mod.weight.detach().double().numpy() - old, beta[:-1].T, atol=1e-4)
    assert np.allclose(new_mod.bias.detach().double().numpy(), beta[-1], atol=1e-4)
    # other layers untouched; the fit reproduces most of the steering on the training tokens
    assert torch.equal(out.model.model.layers[0].mlp.down_proj.weight, model.hf_model.model.layers[0].mlp.down_proj.weight)
    fitted = n @ beta[:-1] + beta[-1]
    assert out.fit["relative_error"] == pytest.approx(np.linalg.norm(fitted - r) / np.linalg.norm(r), rel=1e-4)
    assert out.fit["relative_error"] < 0.9


def test_reduced_rank_regression_keeps_the_top_directions_of_the_fit():
    g = torch.Generator().manual_seed(0)
    n = torch.randn(200, 12, generator=g, dtype=torch.float64)
    true = torch.randn(5, 2, generator=g, dtype=torch.float64) @ torch.randn(2, 12, generator=g, dtype=torch.float64)
    r = n @ true.T + 0.5
    dw, b = regression(n, r, rank=2, ridge=0.0)
    assert torch.allclose(dw, true, atol=1e-8) and torch.allclose(b, torch.full((5,), 0.5, dtype=torch.float64))
    dw1, _ = regression(n, r, rank=1, ridge=0.0)
    assert torch.linalg.matrix_rank(dw1) == 1


def test_amortized_checkpoint_saves_for_plain_transformers_and_refuses_to_overwrite(tiny_llama, tmp_path):
    from transformers import AutoModelForCausalLM

    model, layer = tiny_llama, 1
    v = torch.randn(64, generator=torch.Generator().manual_seed(1))
    recipe = sl.Rotate(v, angle=30.0, layers=[layer])
    out = sl.edit.amortize(model, recipe, TEXTS, rank=8)
    path = out.save(tmp_path / "ckpt")
    loaded = AutoModelForCausalLM.from_pretrained(path)
    ids = torch.tensor([model.tokenizer("the cat")["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(loaded(ids).logits, out.model(ids).logits, atol=1e-5)
    with pytest.raises(sl.SteerlabError, match="overwrite=True"):
        out.save(tmp_path / "ckpt")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(sl.SteerlabError):
        out.save(tmp_path / "mine", overwrite=True)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"
    out.save(tmp_path / "ckpt", overwrite=True)


def test_amortize_refuses_what_it_cannot_train(tiny_llama):
    v = torch.randn(64)
    with pytest.raises(sl.SteerlabError, match="after layer 0"):
        sl.edit.amortize(tiny_llama, sl.Add(v, layers=[2]), TEXTS, layer=0)
    with pytest.raises(sl.SteerlabError, match="post-norm"):
        sl.edit.amortize(tiny_model("gemma2"), sl.Add(v, layers=[1]), TEXTS)
    with pytest.raises(sl.SteerlabError, match="rank"):
        sl.edit.amortize(tiny_llama, sl.Add(v, layers=[1]), TEXTS, rank=0)
