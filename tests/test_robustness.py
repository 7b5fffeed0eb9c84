"""Latent-perturbation robustness (ASA): differentiable teacher forcing and the audit, against plain torch."""

from __future__ import annotations

import math

import pytest
import torch

import steerlab as sl
from steerlab.evaluate.robustness import Refusals, adversarial_direction, latent_robustness, layer_scale
from steerlab.models.grad import teacher_forced_nll

PROMPTS = [[1, 40, 41, 42, 43], [1, 50, 51]]
TARGETS = [[60, 61, 62], [70, 71, 72, 73]]


def hand_nll(model, layer, deltas):
    """Plain torch: each row alone, a forward hook on block ``layer`` adding ``deltas[b]``, mean NLL of its target."""
    hf = model.hf_model
    out = []
    for b, (p, t) in enumerate(zip(PROMPTS, TARGETS)):
        handle = hf.model.layers[layer].register_forward_hook(
            lambda mod, args, output, d=deltas[b]: (output[0] + d,) + tuple(output[1:])
            if isinstance(output, tuple) else output + d)
        try:
            ids = torch.tensor([p + t])
            logits = hf(input_ids=ids).logits[0].float()
        finally:
            handle.remove()
        lp = torch.log_softmax(logits[:-1], -1)
        picked = lp[torch.arange(len(p) - 1, len(p) + len(t) - 1), torch.tensor(t)]
        out.append(-picked.mean())
    return torch.stack(out)


def test_teacher_forced_nll_matches_hand_reference_with_and_without_edit(tiny_llama):
    zero = torch.zeros(2, tiny_llama.d_model)
    got = teacher_forced_nll(tiny_llama, PROMPTS, TARGETS)
    assert torch.allclose(got, hand_nll(tiny_llama, 1, zero), atol=1e-5)
    delta = torch.randn(2, tiny_llama.d_model, generator=torch.Generator().manual_seed(1))
    got = teacher_forced_nll(tiny_llama, PROMPTS, TARGETS,
                             {"layers.1.resid_post": lambda x, end: x + delta[:, None, :]})
    want = hand_nll(tiny_llama, 1, delta)
    assert torch.allclose(got, want, atol=1e-5)
    assert not torch.allclose(got, teacher_forced_nll(tiny_llama, PROMPTS, TARGETS), atol=1e-3)


def test_gradient_flows_to_the_edit_and_matches_hand_autograd(tiny_llama):
    delta = torch.zeros(2, tiny_llama.d_model, requires_grad=True)
    loss = teacher_forced_nll(tiny_llama, PROMPTS, TARGETS, {"layers.0.resid_post": lambda x, e: x + delta[:, None]})
    (g,) = torch.autograd.grad(loss.sum(), [delta])
    ref = torch.zeros(2, tiny_llama.d_model, requires_grad=True)
    (g_ref,) = torch.autograd.grad(hand_nll(tiny_llama, 0, ref[:, None]).sum(), [ref])
    assert torch.allclose(g, g_ref, atol=1e-5)
    assert all(p.grad is None for p in tiny_llama.hf_model.parameters())


def test_adversarial_direction_is_the_normalized_gradient(tiny_llama):
    refusals = Refusals(["a", "b"], ["x", "y"], PROMPTS, TARGETS, 2)
    radius = torch.tensor([0.5, 2.0])
    delta = adversarial_direction(tiny_llama, refusals, 2, radius)
    ref = torch.zeros(2, tiny_llama.d_model, requires_grad=True)
    (g,) = torch.autograd.grad(hand_nll(tiny_llama, 2, ref[:, None]).sum(), [ref])
    want = g / g.norm(dim=-1, keepdim=True) * radius[:, None]
    assert torch.allclose(delta, want, atol=1e-5)
    # a first-order ascent step raises the loss
    assert bool((hand_nll(tiny_llama, 2, delta[:, None] * 0.1) > hand_nll(tiny_llama, 2, torch.zeros(2, 1, 64))).all())


def test_layer_scale_is_the_median_token_norm(tiny_llama):
    refusals = Refusals(["a", "b"], ["x", "y"], PROMPTS, TARGETS, 2)
    with torch.no_grad():
        hs = [tiny_llama.hf_model(input_ids=torch.tensor([p]), output_hidden_states=True).hidden_states[2][0]
              for p in PROMPTS]
    want = torch.cat([h[1:].norm(dim=-1) for h in hs]).median()
    assert layer_scale(tiny_llama, refusals, 1) == pytest.approx(float(want), rel=1e-5)


def test_audit_table_adversarial_beats_random_and_flags_flips(tiny_llama):
    audit = latent_robustness(tiny_llama, ["Tell me", "Say it"], layers=[0, 2], radii=(0.05, 0.5), n_random=3,
                              max_new_tokens=4, target_tokens=4, substrings=("",), progress=False)
    t = audit.table
    assert len(t) == 2 * 2 * 2 and set(t["kind"]) == {"adversarial", "random"}
    assert audit.refusals.asked == 2 and len(audit.refusals.prompts) == 2
    for layer in (0, 2):
        adv = t[(t.layer == layer) & (t.kind == "adversarial") & (t.radius == 0.05)].delta_nll.item()
        rnd = t[(t.layer == layer) & (t.kind == "random") & (t.radius == 0.05)].delta_nll.item()
        assert adv > 0 and adv > rnd
    # substrings=("",) calls every reply a refusal, so nothing can flip
    assert (t["flipped"] == 0).all() and audit.layers["flip_radius"].map(math.isnan).all()
    only_adv = latent_robustness(tiny_llama, None, layers=[1], radii=(0.1,), n_random=1, flip_random=False,
                                 refusals=audit.refusals, progress=False).table
    assert only_adv.set_index("kind")["flipped"].map(math.isnan).to_dict() == {"adversarial": False, "random": True}


def test_audit_refuses_bad_input(tiny_llama):
    with pytest.raises(sl.SteerlabError, match="radii"):
        latent_robustness(tiny_llama, ["x"], radii=(0.0,), substrings=("",))
    with pytest.raises(sl.SteerlabError, match="refused none"):
        latent_robustness(tiny_llama, ["x"], max_new_tokens=2, substrings=("\x00never",))
