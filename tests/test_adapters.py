"""The shared adapter suite: every site of every accepted model_type readable, writable and consistent,
and every declaration of an adapter (norm, weight layout, multipliers, soft-cap, embedding scale) checked
against what the model computes."""

from __future__ import annotations

import pytest
import torch

import steerlab as sl
from steerlab.models.adapters import supported_model_types
from steerlab.sites import LAYER_KINDS
from tiny import FAMILIES, tiny_config

TEXTS = ["hello world", "a somewhat longer text, with punctuation!", "x"]


def plain_forward(model, texts, **kwargs):
    """One text at a time, no padding: the model's own outputs as the reference."""
    outs = []
    for t in texts:
        ids = model.tokenizer(t, return_tensors="pt").input_ids
        with torch.no_grad():
            outs.append(model.hf_model(ids, output_hidden_states=True, use_cache=False, **kwargs))
    return outs


def test_every_site_has_the_documented_shape(any_tiny):
    m = any_tiny
    acts = m.capture(TEXTS, sites=m.sites(), positions="last")
    assert set(acts.sites) == set(m.sites())
    for name in m.sites():
        site = sl.parse_site(name)
        vocab = m.hf_model.get_output_embeddings().weight.shape[0]
        expected = {"attn.heads": (m.n_heads, m.d_head), "mlp.neurons": (m.d_mlp,),
                    "logits": (vocab,)}.get(site.kind, (m.d_model,))
        assert tuple(acts[name].shape) == (len(TEXTS), *expected), name


def test_resid_post_equals_output_hidden_states(any_tiny):
    m = any_tiny
    acts = m.capture(TEXTS, sites=["resid_post", "embed", "final", "logits"], positions="all")
    refs = plain_forward(m, TEXTS)
    for i, ref in enumerate(refs):
        hs = ref.hidden_states
        assert torch.allclose(acts["embed"][i], hs[0][0], atol=1e-5)
        for layer in range(m.n_layers - 1):
            assert torch.allclose(acts[f"layers.{layer}.resid_post"][i], hs[layer + 1][0], atol=1e-5), layer
        # transformers returns the last layer's state after the final norm: that is our `final` site
        assert torch.allclose(acts["final"][i], hs[-1][0], atol=1e-5)
        assert torch.allclose(acts["logits"][i], ref.logits[0], atol=1e-4)


def test_every_accepted_model_type_has_a_tiny_model_in_this_suite():
    """The suite below runs on tiny.FAMILIES; every model_type an adapter accepts must be among them."""
    tested = {tiny_config(family).model_type for family in FAMILIES}
    assert set(supported_model_types()) <= tested, set(supported_model_types()) - tested
    assert len(supported_model_types()) == len(set(supported_model_types()))  # no type claimed twice


def test_residual_identities(any_tiny):
    m = any_tiny
    acts = m.capture(TEXTS, sites=["resid_pre", "attn_out", "resid_mid", "mlp_out", "resid_post"], positions="all")
    for i in range(len(TEXTS)):
        for layer in range(m.n_layers):
            get = lambda k, layer=layer, i=i: acts[f"layers.{layer}.{k}"][i]
            assert torch.allclose(get("resid_mid"), get("resid_pre") + get("attn_out"), atol=1e-5)
            assert torch.allclose(get("resid_post"), get("resid_mid") + get("mlp_out"), atol=1e-5)
            if m.bound.parallel:  # GPT-NeoX: both sub-layers read resid_pre
                assert torch.allclose(get("resid_post"), get("resid_pre") + get("attn_out") + get("mlp_out"),
                                      atol=1e-5)
            if layer + 1 < m.n_layers:
                assert torch.equal(get("resid_post"), acts[f"layers.{layer + 1}.resid_pre"][i])


def test_heads_through_output_projection_sum_to_its_output(any_tiny):
    m = any_tiny
    layer = m.n_layers - 1
    o_proj = m.bound.block_module(layer, m.adapter.o_proj)
    seen = {}
    handle = o_proj.register_forward_hook(lambda mod, args, out: seen.__setitem__("out", out.detach()))
    try:
        # the capture stops after its deepest site: ask for a later one so o_proj runs
        acts = m.capture(TEXTS[:1], sites=[f"layers.{layer}.attn.heads", "final"], positions="all")
    finally:
        handle.remove()
    heads = acts[f"layers.{layer}.attn.heads"][0]  # [T, H, dh]
    weight = m.adapter.linear_weight(o_proj)  # [d, H*dh], whatever the family stores
    assert tuple(weight.shape) == (m.d_model, m.n_heads * m.d_head)
    per_head = torch.stack([heads[:, h] @ weight[:, h * m.d_head:(h + 1) * m.d_head].T for h in range(m.n_heads)])
    total = per_head.sum(0)
    if o_proj.bias is not None:
        total = total + o_proj.bias
    assert torch.allclose(total, seen["out"][0], atol=1e-5)


def test_attn_and_mlp_out_are_what_is_added_to_the_residual(any_tiny):
    """For Gemma the post-norm output is added; elsewhere the sub-layer output itself (times Granite's
    residual_multiplier)."""
    m = any_tiny
    layer = 1
    block = m.bound.blocks[layer]
    attn_module = block.get_submodule(m.adapter.attn_out)
    seen = {}
    handle = attn_module.register_forward_hook(
        lambda mod, args, out: seen.__setitem__("attn", (out[0] if isinstance(out, tuple) else out).detach()))
    try:
        acts = m.capture(TEXTS[:1], sites=[f"layers.{layer}.attn_out", f"layers.{layer}.resid_pre",
                                           f"layers.{layer}.resid_post", f"layers.{layer}.mlp_out"], positions="all")
    finally:
        handle.remove()
    assert torch.equal(acts[f"layers.{layer}.attn_out"][0], seen["attn"][0] * m.bound.residual_multiplier)
    if m.family == "gemma":
        assert m.adapter.attn_out == "post_attention_layernorm"
    # a post-norm sits between the projection and the residual stream exactly when the adapter says so
    assert m.adapter.post_norm == (not m.adapter.o_proj.startswith(m.adapter.attn_out + "."))
    assert m.adapter.post_norm == (not m.adapter.down_proj.startswith(m.adapter.mlp_out + "."))
    total = acts[f"layers.{layer}.resid_pre"][0] + acts[f"layers.{layer}.attn_out"][0] + acts[f"layers.{layer}.mlp_out"][0]
    assert torch.allclose(total, acts[f"layers.{layer}.resid_post"][0], atol=1e-5)


def _zero_everywhere(m):
    items = [sl.Add(torch.zeros(m.d_model), site="embed"), sl.Add(torch.zeros(m.d_model), site="final"),
             sl.Add(torch.zeros(m.hf_model.get_output_embeddings().weight.shape[0]), site="logits")]
    for kind in LAYER_KINDS:
        width = {"attn.heads": m.n_heads * m.d_head, "mlp.neurons": m.d_mlp}.get(kind, m.d_model)
        items.append(sl.Add(torch.zeros(width), site=kind))
    items.append(sl.Scale(1.0, site="attn.heads"))
    items.append(sl.Rotate(torch.randn(m.d_model), angle=0.0, site="resid_post"))
    items.append(sl.Clamp(torch.randn(m.d_model), min=-float("inf"), site="resid_mid"))
    return sl.Steering(items)


def test_identity_interventions_leave_logits_bit_identical(any_tiny):
    m = any_tiny
    plain = m.logits(TEXTS)
    steered = m.logits(TEXTS, steering=_zero_everywhere(m))
    assert torch.equal(plain, steered)


def test_every_site_is_writable(any_tiny):
    """Adding a vector at a site shows up when the same site is read, and changes the logits."""
    m = any_tiny
    plain = m.logits(TEXTS)
    for kind in ["embed", *LAYER_KINDS, "final", "logits"]:
        site = kind if kind in ("embed", "final", "logits") else f"layers.1.{kind}"
        shape = m.site_shape(site)
        vec = torch.randn(shape).flatten()
        steer = sl.Steering([sl.Add(vec, layers=[1], site=kind)])
        before = m.capture(TEXTS, sites=[site], positions="all")
        after = m.capture(TEXTS, sites=[site], positions="all", steering=steer)
        for b, a in zip(before[site], after[site]):
            assert torch.allclose(a, b + vec.view(shape), atol=1e-5), kind
        if kind != "logits":
            assert not torch.allclose(plain, m.logits(TEXTS, steering=steer)), kind


def test_declared_norm_computes_the_final_norm(any_tiny):
    """The adapter's Norm (kind, weight offset, epsilon) reproduces the model's own final norm."""
    m = any_tiny
    spec, norm = m.adapter.norm, m.bound.module(m.adapter.final_norm)
    x = torch.randn(5, m.d_model) * 3
    eps = spec.epsilon(norm)
    centred = x - x.mean(-1, keepdim=True) if spec.kind == "layer" else x
    want = centred * (centred.pow(2).mean(-1, keepdim=True) + eps).rsqrt()
    weight, bias = getattr(norm, "weight", None), getattr(norm, "bias", None)
    if weight is not None:
        want = want * (spec.weight_offset + weight.detach())
    if bias is not None:
        want = want + bias.detach()
    with torch.no_grad():
        assert torch.allclose(norm(x), want, atol=1e-5)


def test_declared_readout_gives_the_logits(any_tiny):
    """Unembedding the final site, then the adapter's logit divisor and soft-cap, gives the logits site."""
    m = any_tiny
    acts = m.capture(TEXTS, sites=["final", "logits"], positions="last")
    with torch.no_grad():
        unembedded = m.hf_model.get_output_embeddings()(acts["final"])
    assert torch.allclose(m.bound.logits_from_unembedded(unembedded), acts["logits"], atol=1e-5)


def test_declared_embedding_scale_and_positions_give_the_embed_site(any_tiny):
    """``embed`` = token row x embed_scale x embedding_multiplier (+ the learned position row)."""
    m = any_tiny
    b = m.bound
    ids = m.tokenizer(TEXTS[1], return_tensors="pt").input_ids[0]
    got = m.capture([TEXTS[1]], sites="embed", positions="all")["embed"][0]
    want = m.hf_model.get_input_embeddings().weight.detach()[ids] * b.embed_scale * b.embedding_multiplier
    if m.adapter.position_embed:
        want = want + b.module(m.adapter.position_embed).weight.detach()[: len(ids)]
    assert torch.allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("family", ["gemma2", "gpt2", "neox_parallel", "neox_sequential", "granite"])
def test_writes_propagate_like_the_residual_stream(family):
    """A write at attn_out or resid_mid shifts resid_mid by exactly that vector; a write at mlp_out
    shifts resid_post by it (and in parallel blocks, where the MLP never reads resid_mid, all do)."""
    from tiny import tiny_model

    m = tiny_model(family)
    vec = torch.randn(m.d_model)
    sites = ["layers.1.resid_mid", "layers.1.resid_post"]
    base = m.capture(TEXTS, sites=sites, positions="all")
    for kind in ("attn_out", "resid_mid", "mlp_out"):
        got = m.capture(TEXTS, sites=sites, positions="all", steering=sl.Add(vec, layers=[1], site=kind))
        checked = ["layers.1.resid_post"] if kind == "mlp_out" else ["layers.1.resid_mid"]
        if m.bound.parallel and kind != "mlp_out":
            checked = sites
        for name in checked:
            for b, g in zip(base[name], got[name]):
                assert torch.allclose(g, b + vec, atol=1e-5), (kind, name)


def test_sites_lists_every_kind(tiny_llama):
    names = tiny_llama.sites()
    assert names[0] == "embed" and names[-2:] == ["final", "logits"]
    assert len(names) == 3 + tiny_llama.n_layers * len(LAYER_KINDS)


def test_unsupported_family_is_a_clear_error():
    from transformers import BertConfig, BertForMaskedLM

    from tiny import byte_tokenizer

    hf = BertForMaskedLM(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                    intermediate_size=32))
    with pytest.raises(sl.SteerlabError, match="model_type 'bert' is not supported; supported: .*granite"):
        sl.Model(hf, byte_tokenizer())
