"""Head attribution, ablation and interchange against hand computations with raw hooks."""

from __future__ import annotations

import pytest
import torch

import steerlab as sl
from analysis_refs import hooked, last_logits
from steerlab.analysis.heads import frozen_norm, head_writes, o_proj_weight

TEXT = "hello world"


def _tok(model, c):
    return model.tokenizer(c, add_special_tokens=False)["input_ids"][0]


def test_frozen_norm_of_the_whole_input_is_the_norm(any_tiny):
    model = any_tiny
    norm = model.bound.module(model.adapter.final_norm)
    x = torch.randn(3, model.d_model) * 2
    with torch.no_grad():
        want = norm(x).float() - (getattr(norm, "bias", None).detach() if getattr(norm, "bias", None) is not None else 0)
    got = frozen_norm(norm, x, torch.stack([x * 0.25, x * 0.75], 1), model.adapter.norm).sum(1)
    assert torch.allclose(got, want, atol=1e-5)


def test_head_writes_sum_to_the_attention_output(any_tiny):
    model = any_tiny
    layer = 1
    acts = model.capture([TEXT], sites=[f"layers.{layer}.attn.heads", f"layers.{layer}.attn_out"], positions="all")
    z = acts[f"layers.{layer}.attn.heads"][0]
    writes = head_writes(model, z, layer)
    o_proj = model.bound.block_module(layer, model.adapter.o_proj)
    bias = getattr(o_proj, "bias", None)
    expected = acts[f"layers.{layer}.attn_out"][0]
    if bias is not None:
        expected = expected - bias.detach().float() * model.bound.residual_multiplier
    assert torch.allclose(writes.sum(1), expected, atol=1e-4)


def test_direction_scores_are_hand_slices_of_w_o(tiny_llama):
    model = tiny_llama
    torch.manual_seed(0)
    w = torch.randn(model.d_model)
    table = sl.analysis.head_attribution(model, [TEXT, "abcdefg"], direction=w, layers=[0, 2])
    weight = model.hf_model.model.layers[2].self_attn.o_proj.weight.detach()
    store = {}
    for text in (TEXT, "abcdefg"):
        def keep(x):
            store.setdefault("z", []).append(x[0, -1].detach().clone())
            return x
        with hooked(model.hf_model.model.layers[2].self_attn.o_proj, keep, pre=True):
            last_logits(model, text)
    dh = model.d_head
    for h in range(model.n_heads):
        scores = [float(weight[:, h * dh:(h + 1) * dh] @ z[h * dh:(h + 1) * dh] @ (w / w.norm())) for z in store["z"]]
        row = table[(table["layer"] == 2) & (table["head"] == h)].iloc[0]
        assert row["score"] == pytest.approx(sum(scores) / 2, abs=1e-4)
    assert sorted(table["rank"]) == list(range(1, 2 * model.n_heads + 1))


def test_direct_logit_attribution_adds_up_to_the_logit_difference(tiny_llama):
    model = tiny_llama
    a, b = _tok(model, "x"), _tok(model, "y")
    table = sl.analysis.head_attribution(model, [TEXT], answers=("x", "y"))
    last = model.n_layers - 1
    sites = ["embed"] + [f"layers.{l}.mlp_out" for l in range(model.n_layers)] + [f"layers.{last}.resid_post"]
    acts = model.capture([TEXT], sites=sites, positions="last")
    x = acts[f"layers.{last}.resid_post"]
    u = model.hf_model.lm_head.weight[a] - model.hf_model.lm_head.weight[b]
    norm = model.hf_model.model.norm
    rest = torch.stack([acts["embed"][0]] + [acts[f"layers.{l}.mlp_out"][0] for l in range(model.n_layers)])
    others = float((frozen_norm(norm, x, rest[None], model.adapter.norm) @ u.detach()).sum())
    logits = last_logits(model, TEXT)
    assert table["score"].sum() + others == pytest.approx(float(logits[a] - logits[b]), abs=1e-3)


def _zero_heads(heads, dh, renorm=False, means=None):
    def fn(x):
        y = x.clone()
        for h in heads:
            y[..., h * dh:(h + 1) * dh] = 0 if means is None else means[h]
        if renorm:
            y = y * (x.norm(dim=-1, keepdim=True) / y.norm(dim=-1, keepdim=True))
        return y
    return fn


@pytest.mark.parametrize("renorm", [False, True])
def test_zero_ablation_matches_a_hand_hook(tiny_llama, renorm):
    model = tiny_llama
    a, b = _tok(model, "x"), _tok(model, "y")
    table = sl.analysis.head_ablation(model, [TEXT], answers=("x", "y"), renorm=renorm, layers=[1])
    base = last_logits(model, TEXT)
    for h in range(model.n_heads):
        with hooked(model.hf_model.model.layers[1].self_attn.o_proj, _zero_heads([h], model.d_head, renorm), pre=True):
            logits = last_logits(model, TEXT)
        row = table[table["head"] == h].iloc[0]
        assert row["effect"] == pytest.approx(float((logits[a] - logits[b]) - (base[a] - base[b])), abs=1e-4)


def test_mean_ablation_of_heads_together(tiny_llama):
    model = tiny_llama
    texts = [TEXT, "abcdefgh"]
    table = sl.analysis.head_ablation(model, texts, heads=[(0, 1), (2, 3)], gold="x", mode="mean", together=True)
    assert len(table) == 1 and table["heads"][0] == "L0H1+L2H3"
    dh = model.d_head
    means = {}
    for layer in (0, 2):
        zs = []
        for text in texts:
            def keep(x, zs=zs):
                zs.append(x[0].detach().clone())
                return x
            with hooked(model.hf_model.model.layers[layer].self_attn.o_proj, keep, pre=True):
                last_logits(model, text)
        means[layer] = torch.cat(zs).mean(0).view(model.n_heads, dh)
    x = _tok(model, "x")
    effects = []
    for text in texts:
        base = torch.log_softmax(last_logits(model, text), -1)[x]
        with hooked(model.hf_model.model.layers[0].self_attn.o_proj, _zero_heads([1], dh, means=means[0]), pre=True), \
                hooked(model.hf_model.model.layers[2].self_attn.o_proj, _zero_heads([3], dh, means=means[2]), pre=True):
            after = torch.log_softmax(last_logits(model, text), -1)[x]
        effects.append(float(after - base))
    assert table["effect"][0] == pytest.approx(sum(effects) / 2, abs=1e-4)


def test_interchange_writes_one_head_from_the_source(tiny_llama):
    model = tiny_llama
    base, source = "hello world", "jello wormd"
    a, b = _tok(model, "x"), _tok(model, "y")
    table = sl.analysis.head_interchange(model, base, source, answers=("x", "y"), layers=[1])
    module = model.hf_model.model.layers[1].self_attn.o_proj
    store = {}

    def keep(x):
        store["z"] = x.detach().clone()
        return x

    with hooked(module, keep, pre=True):
        source_logits = last_logits(model, source)
    base_logits = last_logits(model, base)
    dh = model.d_head
    for h in range(model.n_heads):
        def swap(x, h=h):
            y = x.clone()
            y[..., h * dh:(h + 1) * dh] = store["z"][..., h * dh:(h + 1) * dh]
            return y
        with hooked(module, swap, pre=True):
            logits = last_logits(model, base)
        m = float(logits[a] - logits[b])
        m0, m1 = float(base_logits[a] - base_logits[b]), float(source_logits[a] - source_logits[b])
        row = table[table["head"] == h].iloc[0]
        assert row["effect"] == pytest.approx(m - m0, abs=1e-4)
        assert row["normalized"] == pytest.approx((m - m0) / (m1 - m0), abs=1e-4)


def test_head_inputs_are_checked(tiny_llama):
    with pytest.raises(sl.SteerlabError, match="exactly one of"):
        sl.analysis.head_attribution(tiny_llama, TEXT)
    with pytest.raises(sl.SteerlabError, match="out of range"):
        sl.analysis.head_ablation(tiny_llama, TEXT, heads=[(0, 99)], gold="x")
    with pytest.raises(sl.SteerlabError, match="renorm"):
        sl.analysis.head_ablation(tiny_llama, TEXT, gold="x", mode="mean", renorm=True)
    with pytest.raises(sl.SteerlabError, match="same token length"):
        sl.analysis.head_interchange(tiny_llama, "abc", "abcd", gold="x")


def test_o_proj_weight_shape_for_gpt2_conv1d():
    from tiny import tiny_model

    model = tiny_model("gpt2")
    assert tuple(o_proj_weight(model, 0).shape) == (model.d_model, model.n_heads * model.d_head)


@pytest.mark.slow
def test_embedded_top_attributed_head_matters_when_ablated(smollm):
    table = sl.analysis.head_attribution(smollm, ["The capital of France is"], answers=(" Paris", " Rome"))
    top = table.iloc[0]
    ablated = sl.analysis.head_ablation(smollm, ["The capital of France is"], heads=[(int(top["layer"]), int(top["head"]))],
                                        answers=(" Paris", " Rome"))
    assert top["score"] > 1.0
    assert ablated["effect"][0] < -1.0
