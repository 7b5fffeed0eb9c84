"""Weighted-controller steering (Guiding Giants) against hand-written torch on a tiny model."""

from __future__ import annotations

import pytest
import torch

import steerlab as sl
from steerlab.recipes import ControllerFit, fit_controller

D = 64


def _controller(k: int, n_out: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"w1": torch.randn(16, k * D, generator=g) * 0.2, "b1": torch.randn(16, generator=g) * 0.1,
            "w2": torch.randn(n_out, 16, generator=g), "b2": torch.randn(n_out, generator=g)}


def _hand_hooks(model, ctrl, direction, inputs, steered, scale, apply_from):
    """Forward hooks in plain torch: record input layers' outputs at every position, run the controller
    per position, add ``s * scale * sigmoid(w_j) * r̂_j`` at positions ``>= apply_from[b]`` of steered layers."""
    layers = model.hf_model.model.layers
    seen: dict[int, torch.Tensor] = {}
    handles = []

    def out_of(o):
        return o[0] if isinstance(o, tuple) else o

    def put(o, h):
        return (h, *o[1:]) if isinstance(o, tuple) else h

    for layer in inputs:
        handles.append(layers[layer].register_forward_hook(
            lambda m, i, o, layer=layer: seen.__setitem__(layer, out_of(o).detach().clone())))
    for j, layer in enumerate(steered):
        def hook(m, i, o, j=j, layer=layer):
            h = out_of(o)
            feats = torch.cat([seen[x] for x in inputs], -1)                    # [B, T, k*d]
            hidden = torch.relu(feats @ ctrl["w1"].T + ctrl["b1"])
            out = hidden @ ctrl["w2"].T + ctrl["b2"]
            coeff = out[..., 0] * scale * torch.sigmoid(out[..., 1 + j])        # [B, T]
            pos = torch.arange(h.shape[1])[None, :] >= apply_from[:, None]
            r = direction[layer] / direction[layer].norm()
            return put(o, h + (coeff * pos)[..., None] * r)
        handles.append(layers[layer].register_forward_hook(hook))
    return handles


@pytest.fixture()
def setup(tiny_llama):
    g = torch.Generator().manual_seed(1)
    direction = {1: torch.randn(D, generator=g), 2: torch.randn(D, generator=g)}
    ctrl = _controller(1, 3)
    item = sl.Weighted(ctrl, direction, input_layers=[0], layers=[1, 2], scale=3.0)
    return tiny_llama, ctrl, direction, item


def test_weighted_logits_match_hand_controller_at_the_last_token(setup):
    model, ctrl, direction, item = setup
    texts = ["hello there", "a much longer prompt here"]
    got = model.logits(texts, steering=sl.Steering([item]))
    plain = model.logits(texts)
    ids = [model.tokenizer(t)["input_ids"] for t in texts]
    want = []
    for row in ids:   # one text at a time: no padding, the last token is steered
        x = torch.tensor([row])
        handles = _hand_hooks(model, ctrl, direction, [0], [1, 2], 3.0, torch.tensor([len(row) - 1]))
        try:
            with torch.no_grad():
                want.append(model.hf_model(x).logits[0, -1])
        finally:
            for h in handles:
                h.remove()
    want_t = torch.stack(want)
    assert torch.allclose(got, want_t, atol=1e-4)
    assert (got - plain).abs().max() > 1e-2   # it did steer


def test_weighted_generation_steers_each_new_token_like_a_full_rerun(setup):
    model, ctrl, direction, item = setup
    prompts = ["hi", "tell me more"]
    out = model.generate(prompts, steering=item, max_new_tokens=4, chat=False)
    for prompt, tokens in zip(prompts, out.tokens):
        ids = model.tokenizer(prompt)["input_ids"]
        seq = list(ids)
        for _ in range(4):   # uncached greedy rerun: input layers are unsteered, so each position's controller
            handles = _hand_hooks(model, ctrl, direction, [0], [1, 2], 3.0, torch.tensor([len(ids) - 1]))
            try:
                with torch.no_grad():
                    nxt = int(model.hf_model(torch.tensor([seq])).logits[0, -1].argmax())
            finally:
                for h in handles:
                    h.remove()
            seq.append(nxt)
        assert list(tokens) == seq[len(ids):len(ids) + len(tokens)]


def test_weighted_only_steers_its_rows_in_a_mixed_batch(setup):
    model, _, _, item = setup
    texts = ["alpha beta", "gamma"]
    mixed = model.logits(texts, steering=[sl.Steering([item]), None])
    assert torch.allclose(mixed[1], model.logits(["gamma"])[0], atol=1e-5)
    assert torch.allclose(mixed[0], model.logits(["alpha beta"], steering=item)[0], atol=1e-4)


def test_weighted_round_trips_and_refuses_bad_layouts(setup, tmp_path):
    model, ctrl, direction, item = setup
    path = sl.Steering([item]).save(tmp_path / "w.steer")
    loaded = sl.Steering.load(path)
    texts = ["round trip"]
    assert torch.allclose(model.logits(texts, steering=loaded), model.logits(texts, steering=item), atol=1e-6)
    with pytest.raises(sl.SteerlabError, match="after the last input layer"):
        model.logits(texts, steering=sl.Weighted(ctrl, direction, input_layers=[1], layers=[1, 2]))
    with pytest.raises(sl.SteerlabError, match="outputs"):
        model.logits(texts, steering=sl.Weighted(_controller(1, 2), direction, input_layers=[0], layers=[1, 2]))
    with pytest.raises(sl.SteerlabError, match="reads"):
        model.logits(texts, steering=sl.Weighted(_controller(1, 2), {2: direction[2]}, input_layers=[0, 1],
                                                 layers=[2]))
    with pytest.raises(sl.SteerlabError, match="controller"):
        sl.edit.bake(model, item)


def test_fit_controller_takes_the_papers_step_on_a_hand_copy():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 10, generator=g)
    y = torch.tensor([1.0, 1, 1, 0, 0, 0])
    tensors, history = fit_controller(x, y, n_layers_out=2, hidden=5, epochs=1, lr=1e-2, batch_size=6, seed=3)
    torch.manual_seed(3)   # the same initialisation, then one hand-written AdamW step on the whole batch
    l1, l2 = torch.nn.Linear(10, 5), torch.nn.Linear(5, 3)
    params = [l1.weight, l1.bias, l2.weight, l2.bias]
    opt = torch.optim.AdamW(params, lr=1e-2)
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(3))
    out = l2(torch.relu(l1(x[perm])))
    s, w = out[:, 0], torch.sigmoid(out[:, 1:])
    yy = y[perm]
    wh = w[yy > 0.5]
    loss = -(yy * torch.log(torch.sigmoid(s)) + (1 - yy) * torch.log(1 - torch.sigmoid(s))).mean() \
        + 0.1 * ((wh - 0.5).abs().mean() + 0.01 * wh.mean())
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    assert torch.allclose(tensors["w1"], l1.weight, atol=1e-6)
    assert torch.allclose(tensors["w2"], l2.weight, atol=1e-6)
    assert history[0]["loss"] == pytest.approx(float(loss), rel=1e-5)
    fit = ControllerFit(tensors, [0], [1, 2])
    s2, w2 = fit.scores(x)
    assert s2.shape == (6,) and w2.shape == (6, 2) and bool(((w2 > 0) & (w2 < 1)).all())


def test_weighted_reads_each_rows_own_last_token_under_right_padding(setup):
    model, _, _, item = setup
    texts = ["short", "a considerably longer text"]
    both = model.capture(texts, sites="layers.2.resid_post", positions="last", steering=item)
    for i, t in enumerate(texts):
        alone = model.capture([t], sites="layers.2.resid_post", positions="last", steering=item)
        assert torch.allclose(both["layers.2.resid_post"][i], alone["layers.2.resid_post"][0], atol=1e-5)
