"""LoFiT: head importance, per-head offsets, the recipe and its bake, against plain torch."""

from __future__ import annotations

import pytest
import torch

import steerlab as sl
from steerlab.edit.lofit import bake_lofit, lofit, task_tokens
from tiny import tiny_model

PROMPTS = ["ab", "cde", "fg", "hij"]
ANSWERS = ["xy", "zz", "xy", "q"]


def hand_nll(model, offsets=None, scales=None):
    """Plain torch: each row alone through the chat template, pre-hooks on o_proj editing its input per head."""
    hf, H, dh = model.hf_model, model.n_heads, model.d_head
    prompt_ids, target_ids = task_tokens(model, PROMPTS, ANSWERS)
    handles = []
    for layer, attn in enumerate(hf.model.layers):
        def pre(mod, args, layer=layer):
            z = args[0].view(*args[0].shape[:-1], H, dh)
            if scales is not None:
                z = z * (1 + scales[layer])
            if offsets is not None and layer in offsets:
                z = z + offsets[layer]
            return (z.reshape(args[0].shape),)
        handles.append(attn.self_attn.o_proj.register_forward_pre_hook(pre))
    try:
        out = []
        for p, t in zip(prompt_ids, target_ids):
            logits = hf(input_ids=torch.tensor([p + t])).logits[0]
            lp = torch.log_softmax(logits[:-1].float(), -1)
            out.append(-lp[torch.arange(len(p) - 1, len(p) + len(t) - 1), torch.tensor(t)].mean())
    finally:
        for h in handles:
            h.remove()
    return torch.stack(out).mean()


def test_offsets_recipe_matches_hand_hook_and_training_lowers_the_loss(tiny_llama):
    result = lofit(tiny_llama, PROMPTS, ANSWERS, heads=[(0, 1), (2, 3)], epochs=6, batch_size=4, lr=0.05,
                   progress=False)
    assert result.heads == [(0, 1), (2, 3)] and sorted(result.offsets) == [0, 2]
    # only the kept heads move
    assert result.offsets[0][[0, 2, 3]].abs().max() == 0 and result.offsets[0][1].abs().max() > 0
    with torch.no_grad():
        before, after = hand_nll(tiny_llama), hand_nll(tiny_llama, offsets=result.offsets)
    assert after < before - 0.05
    assert result.losses["offsets"][-1] < result.losses["offsets"][0]
    # the recipe applies exactly the trained offsets: logits at the last prompt token
    tok = tiny_llama.tokenizer
    text = tok.apply_chat_template([{"role": "user", "content": "ab"}], add_generation_prompt=True, tokenize=False)
    got = tiny_llama.logits(text, steering=result.steering)[0]
    ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
    H, dh = tiny_llama.n_heads, tiny_llama.d_head
    handles = [tiny_llama.hf_model.model.layers[l].self_attn.o_proj.register_forward_pre_hook(
        lambda mod, args, l=l: ((args[0].view(*args[0].shape[:-1], H, dh) + result.offsets[l]).reshape(args[0].shape),))
        for l in result.offsets]
    try:
        with torch.no_grad():
            want = tiny_llama.hf_model(input_ids=ids).logits[0, -1]
    finally:
        for h in handles:
            h.remove()
    assert torch.allclose(got, want, atol=1e-4)


def test_importance_first_step_is_adams_sign_step_of_the_hand_gradient(tiny_llama):
    lr = 1e-3
    result = lofit(tiny_llama, PROMPTS, ANSWERS, n_heads=3, select_epochs=1, select_lr=lr, l1=0.0, epochs=1,
                   batch_size=4, progress=False)
    L, H, dh = tiny_llama.n_layers, tiny_llama.n_heads, tiny_llama.d_head
    scales = {l: torch.zeros(H, dh, requires_grad=True) for l in range(L)}
    grads = torch.autograd.grad(hand_nll(tiny_llama, scales=scales), list(scales.values()))
    # Adam's first step is lr * g / (|g| + eps) per component
    want = torch.stack([(lr * g / (g.abs() + 1e-8)).norm(dim=-1) for g in grads])
    imp = result.importance
    got = torch.zeros(L, H)
    got[imp["layer"].to_numpy(), imp["head"].to_numpy()] = torch.tensor(imp["score"].tolist(), dtype=torch.float32)
    assert torch.allclose(got, want, rtol=1e-3, atol=1e-7)
    top = imp.sort_values("rank").head(3)
    assert result.heads == list(zip(top["layer"], top["head"])) and len(result.heads) == 3


@pytest.mark.parametrize("family", ["llama", "granite", "gpt2"])
def test_bake_lofit_matches_the_recipe(family):
    model = tiny_model(family)
    H, dh = model.n_heads, model.d_head
    g = torch.Generator().manual_seed(0)
    offsets = {1: torch.randn(H, dh, generator=g)}
    recipe = sl.Steering([sl.Add(offsets[1].flatten(), layers=[1], site="attn.heads")])
    baked = sl.Model(bake_lofit(model, recipe), model.tokenizer)
    texts = ["hello there", "abc"]
    assert torch.allclose(baked.logits(texts), model.logits(texts, steering=recipe), atol=1e-4)
    assert not torch.allclose(model.logits(texts), model.logits(texts, steering=recipe), atol=1e-3)


def test_bake_lofit_refuses_a_post_norm_family_and_bad_input(tiny_llama):
    gemma = tiny_model("gemma3")
    recipe = sl.Steering([sl.Add(torch.ones(gemma.n_heads * gemma.d_head), layers=[0], site="attn.heads")])
    with pytest.raises(sl.edit.NotBakeableError, match="post-norm"):
        bake_lofit(gemma, recipe)
    with pytest.raises(sl.SteerlabError, match="answers"):
        lofit(tiny_llama, ["a", "b"], ["x"])
    with pytest.raises(sl.SteerlabError, match="out of range"):
        lofit(tiny_llama, ["a"], ["x"], heads=[(9, 0)])
