"""Steer2Edit: edits equal a hand-written computation from raw forward hooks; the result is a plain checkpoint."""

from __future__ import annotations

import pytest
import torch

import steerlab as sl
from plain_transformers import in_fresh_process
from steerlab.data.contrastive import ContrastiveSet
from steerlab.edit.steer2edit import elastic_net, steer2edit
from tiny import tiny_model

PAIRS = ContrastiveSet(
    positive=["I love this, it is wonderful", "What a great day", "Happy and glad", "Such a lovely gift"],
    negative=["I hate this, it is awful", "What a bad day", "Sad and angry", "Such a terrible gift"],
    name="mini-sentiment",
)


def reference_inputs(hf, modules, texts, tokenizer):
    """Mean (over tokens, then texts) of each module's input, from plain forward pre-hooks."""
    sums = {name: 0 for name in modules}
    store = {}
    handles = [hf.get_submodule(name).register_forward_pre_hook(
        lambda mod, args, name=name: store.__setitem__(name, args[0][0].double().mean(0))) for name in modules]
    try:
        for text in texts:
            ids = torch.tensor([tokenizer(text)["input_ids"]])
            with torch.no_grad():
                hf(input_ids=ids)
            for name in modules:
                sums[name] = sums[name] + store[name]
    finally:
        for h in handles:
            h.remove()
    return {name: s / len(texts) for name, s in sums.items()}


def weight(module):
    return (module.weight.T if type(module).__name__ == "Conv1D" else module.weight).detach().double()


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_edits_match_hand_computation(family):
    model = tiny_model(family)
    rho_attn, rho_mlp, alpha = 0.3, 0.3, 0.5
    before = {k: v.clone() for k, v in model.hf_model.state_dict().items()}
    result = steer2edit(model, PAIRS, rho_attn=rho_attn, rho_mlp=rho_mlp, alpha=alpha)
    adapter = model.bound.adapter
    names = {}
    for layer in range(model.n_layers):
        for which in ("o_proj", "down_proj"):
            names[(layer, which)] = f"{adapter.layers}.{layer}.{getattr(adapter, which)}"
    pos = reference_inputs(model.hf_model, list(names.values()), PAIRS.positive, model.tokenizer)
    neg = reference_inputs(model.hf_model, list(names.values()), PAIRS.negative, model.tokenizer)
    heads, d_head = model.n_heads, model.d_head
    edited_heads = edited_neurons = untouched = 0
    for (layer, which), name in names.items():
        W = weight(model.hf_model.get_submodule(name))
        v = W @ (pos[name] - neg[name])
        vhat = v / v.norm()
        xbar = (pos[name] + neg[name]) / 2
        expected = W.clone()
        if which == "o_proj":
            for j in range(heads):
                cols = slice(j * d_head, (j + 1) * d_head)
                block = W[:, cols]
                out = block @ xbar[cols]
                g = torch.dot(vhat, out) / out.norm()
                lam = torch.sign(g) * max(abs(float(g)) - rho_attn * alpha, 0.0) / (rho_attn * (1 - alpha))
                if lam != 0:
                    k = block.T @ vhat
                    expected[:, cols] += lam * torch.outer(vhat, k / k.norm())
                    edited_heads += 1
        else:
            for j in range(W.shape[1]):
                col = W[:, j] * xbar[j]
                g = torch.dot(vhat, col) / col.norm()
                lam = float(torch.sign(g)) * max(abs(float(g)) - rho_mlp * alpha, 0.0) / (rho_mlp * (1 - alpha))
                if lam != 0:
                    expected[:, j] += lam * float(torch.sign(torch.dot(W[:, j], vhat))) * vhat
                    edited_neurons += 1
                else:
                    untouched += 1
        got = weight(result.model.get_submodule(name))
        torch.testing.assert_close(got, expected, atol=2e-5, rtol=1e-5)
        torch.testing.assert_close(result.vectors["attn" if which == "o_proj" else "mlp"][layer].double(), v,
                                   atol=1e-4, rtol=1e-4)
    assert edited_heads > 0 and edited_neurons > 0 and untouched > 0  # sparse, and not empty
    assert (result.edits.component == "head").sum() == edited_heads
    assert (result.edits.component == "neuron").sum() == edited_neurons
    assert (result.edits.lam != 0).all()
    assert all(torch.equal(before[k], v) for k, v in model.hf_model.state_dict().items())  # original untouched


def test_elastic_net_closed_form():
    g = torch.tensor([0.9, -0.5, 0.1, 0.0])
    lam = elastic_net(g, rho=0.5, alpha=0.4)  # threshold 0.2, divide by 0.3
    torch.testing.assert_close(lam, torch.tensor([0.7 / 0.3, -0.3 / 0.3, 0.0, 0.0]))
    assert torch.equal(elastic_net(g, rho=-1, alpha=0.4), torch.zeros(4))


def test_disabled_kinds_and_bad_settings(tiny_llama):
    result = steer2edit(tiny_llama, PAIRS, rho_attn=-1, rho_mlp=0.3, alpha=0.5)
    assert set(result.edits.component) == {"neuron"}
    for name, _ in tiny_llama.hf_model.named_parameters():
        if "o_proj" in name:
            assert torch.equal(result.model.get_parameter(name), tiny_llama.hf_model.get_parameter(name))
    assert "layer" in result.summary()
    with pytest.raises(sl.SteerlabError, match="alpha"):
        steer2edit(tiny_llama, PAIRS, alpha=1.0)
    with pytest.raises(sl.SteerlabError, match="edits nothing"):
        steer2edit(tiny_llama, PAIRS, rho_attn=-1, rho_mlp=0)


def test_edited_model_is_a_plain_checkpoint(tmp_path):
    model = tiny_model("qwen3")
    result = steer2edit(model, PAIRS, rho_attn=0.3, rho_mlp=0.3, alpha=0.5)
    assert len(result.edits) > 0
    folder = tmp_path / "s2e"
    result.model.save_pretrained(str(folder))
    texts = ["I feel", "Today was"]
    edited = sl.Model(result.model, model.tokenizer).logits(texts, progress=False)
    plain = in_fresh_process([{"dir": str(folder), "texts": texts, "prompts": ["I feel"], "max_new_tokens": 4}],
                             tmp_path)[str(folder)]
    assert (plain["logits"] - edited).abs().max() <= 1e-4 * edited.abs().max()
    assert (edited - model.logits(texts, progress=False)).abs().max() > 1e-3
