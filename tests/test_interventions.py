"""Each intervention against a hand-written reference, on random tensors and inside a model."""

from __future__ import annotations

import json
import math

import pytest
import torch

import steerlab as sl
from steerlab.interventions.batched import compile_rows
from steerlab.interventions.positions import StepContext
from steerlab.sites import Site

torch.manual_seed(0)
D = 16


def rand(*shape):
    return torch.randn(*shape, dtype=torch.float64).float()


# --- on random tensors ---------------------------------------------------------------------------
def test_add_matches_formula():
    x, v = rand(2, 5, D), rand(D)
    out = sl.Add(v, alpha=2.5)(x)
    ref = torch.stack([torch.stack([x[b, t] + 2.5 * v for t in range(5)]) for b in range(2)])
    assert torch.allclose(out, ref, atol=1e-6)


def test_add_norm_match_keeps_each_token_norm():
    x, v = rand(2, 5, D), rand(D)
    out = sl.Add(v, alpha=3.0, norm_match=True)(x)
    assert torch.allclose(out.norm(dim=-1), x.norm(dim=-1), atol=1e-5)
    direction = (x + 3.0 * v) / (x + 3.0 * v).norm(dim=-1, keepdim=True)
    assert torch.allclose(out / out.norm(dim=-1, keepdim=True), direction, atol=1e-5)


def test_ablate_one_direction():
    x, r = rand(3, 4, D), rand(D)
    out = sl.Ablate(r)(x)
    rhat = r / r.norm()
    ref = x - (x @ rhat)[..., None] * rhat
    assert torch.allclose(out, ref, atol=1e-5)
    assert torch.allclose(out @ rhat, torch.zeros(3, 4), atol=1e-5)


def test_ablate_subspace_removes_every_direction_in_it():
    x, basis = rand(3, 4, D), rand(2, D)
    out = sl.Ablate(basis)(x)
    # Gram-Schmidt by hand
    e1 = basis[0] / basis[0].norm()
    e2 = basis[1] - (basis[1] @ e1) * e1
    e2 = e2 / e2.norm()
    ref = x - (x @ e1)[..., None] * e1 - (x @ e2)[..., None] * e2
    assert torch.allclose(out, ref, atol=1e-5)


def test_rotate_relative_in_a_plane_matches_the_2d_rotation_and_keeps_norms():
    x, b1, b2 = rand(2, 6, D), rand(D), rand(D)
    theta = 40.0
    out = sl.Rotate(b1, angle=theta, plane=b2)(x)
    u1 = b1 / b1.norm()
    u2 = b2 - (b2 @ u1) * u1
    u2 = u2 / u2.norm()
    t = math.radians(theta)
    ref = torch.empty_like(x)
    for b in range(2):
        for i in range(6):
            a, c = float(x[b, i] @ u1), float(x[b, i] @ u2)
            rest = x[b, i] - a * u1 - c * u2
            ref[b, i] = rest + (a * math.cos(t) - c * math.sin(t)) * u1 + (a * math.sin(t) + c * math.cos(t)) * u2
    assert torch.allclose(out, ref, atol=1e-5)
    assert torch.allclose(out.norm(dim=-1), x.norm(dim=-1), atol=1e-5)
    assert torch.allclose(sl.Rotate(b1, angle=0.0, plane=b2)(x), x, atol=0)


def test_rotate_absolute_sets_the_in_plane_angle():
    x, b1, b2 = rand(2, 6, D), rand(D), rand(D)
    out = sl.Rotate(b1, angle=120.0, plane=b2, mode="absolute")(x)
    u1 = b1 / b1.norm()
    u2 = b2 - (b2 @ u1) * u1
    u2 = u2 / u2.norm()
    a, c = out @ u1, out @ u2
    angle = torch.rad2deg(torch.atan2(c, a))
    assert torch.allclose(angle, torch.full_like(angle, 120.0), atol=1e-3)
    radius_before = torch.sqrt((x @ u1) ** 2 + (x @ u2) ** 2)
    assert torch.allclose(torch.sqrt(a**2 + c**2), radius_before, atol=1e-5)
    assert torch.allclose(out.norm(dim=-1), x.norm(dim=-1), atol=1e-5)


def test_rotate_adaptive_only_touches_tokens_aligned_with_b1():
    x, b1, b2 = rand(4, 8, D), rand(D), rand(D)
    out = sl.Rotate(b1, angle=90.0, plane=b2, mode="absolute", adaptive=True)(x)
    aligned = (x @ (b1 / b1.norm())) > 0
    assert torch.equal(out[~aligned], x[~aligned])
    assert not torch.allclose(out[aligned], x[aligned])


def test_rotate_towards_a_direction_reduces_the_angle_by_theta():
    x, d = rand(3, 5, D), rand(D)
    u = d / d.norm()
    before = torch.rad2deg(torch.acos((x @ u) / x.norm(dim=-1)))
    out = sl.Rotate(d, angle=10.0)(x)
    after = torch.rad2deg(torch.acos(((out @ u) / out.norm(dim=-1)).clamp(-1, 1)))
    assert torch.allclose(after, before - 10.0, atol=1e-3)
    assert torch.allclose(out.norm(dim=-1), x.norm(dim=-1), atol=1e-5)
    # stays in the plane of x and d: the part orthogonal to both is unchanged
    for b in range(3):
        for t in range(5):
            q, _ = torch.linalg.qr(torch.stack([u, x[b, t]]).T)
            assert torch.allclose(out[b, t] - q @ (q.T @ out[b, t]), torch.zeros(D), atol=1e-5)
    absolute = sl.Rotate(d, angle=30.0, mode="absolute")(x)
    got = torch.rad2deg(torch.acos((absolute @ u) / absolute.norm(dim=-1)))
    assert torch.allclose(got, torch.full_like(got, 30.0), atol=1e-3)


def test_clamp_sets_and_bounds_the_projection():
    x, r = rand(2, 5, D), rand(D)
    rhat = r / r.norm()
    assert torch.allclose(sl.Clamp(r, value=1.5)(x) @ rhat, torch.full((2, 5), 1.5), atol=1e-5)
    bounded = sl.Clamp(r, min=-0.2, max=0.3)(x)
    proj = x @ rhat
    assert torch.allclose(bounded @ rhat, proj.clamp(-0.2, 0.3), atol=1e-5)
    assert torch.allclose(bounded - (bounded @ rhat)[..., None] * rhat, x - proj[..., None] * rhat, atol=1e-5)


def test_scale_knocks_out_heads_and_neurons():
    heads = rand(2, 3, 4, 5)  # [B, T, n_heads, d_head]
    out = sl.Scale(0.0, site="attn.heads", index=[1, 3])(heads)
    ref = heads.clone()
    ref[:, :, 1] = 0
    ref[:, :, 3] = 0
    assert torch.equal(out, ref)
    neurons = rand(2, 3, 7)
    boosted = sl.Scale([2.0, -1.0], site="mlp.neurons", index=[0, 6])(neurons)
    ref = neurons.clone()
    ref[..., 0] *= 2.0
    ref[..., 6] *= -1.0
    assert torch.allclose(boosted, ref)


def test_patch_writes_values_at_listed_positions():
    x = rand(2, 6, D)
    values = rand(2, D)
    out = sl.Patch(values, positions=[1, -1])(x)
    ref = x.clone()
    ref[:, 1] = values[0]
    ref[:, -1] = values[1]
    assert torch.equal(out, ref)
    one = rand(D)
    assert torch.equal(sl.Patch(one, positions=2)(x)[:, 2], one.expand(2, D))


def test_subspace_patch_only_replaces_the_component_along_v():
    x, source, v = rand(2, 4, D), rand(D), rand(D)
    vhat = v / v.norm()
    out = sl.Patch(source, direction=v)(x)
    ref = x + ((source - x) @ vhat)[..., None] * vhat
    assert torch.allclose(out, ref, atol=1e-5)


# --- positions -----------------------------------------------------------------------------------
def test_position_masks_with_left_padding_and_a_kv_cache():
    # two rows, prompt width 4, row 1 has one pad on the left; decoding step at offset 5 (1 generated)
    start, end = torch.tensor([0, 1]), torch.tensor([4, 4])
    prefill = StepContext(2, 4, 0, start, end, {"generating": True})
    assert prefill.mask("all") is None
    assert prefill.mask("prompt").tolist() == [[True] * 4, [False, True, True, True]]
    assert not prefill.mask("generated").any()
    assert prefill.mask("last").tolist() == [[False, False, False, True]] * 2
    assert prefill.mask((0,)).tolist() == [[True, False, False, False], [False, True, False, False]]
    assert prefill.mask((-2,)).tolist() == [[False, False, True, False]] * 2
    step = StepContext(2, 1, 5, start, end, {"generating": True})
    assert step.mask("generated").tolist() == [[True], [True]]
    assert step.mask("last").tolist() == [[True], [True]]
    assert not step.mask("prompt").any()


def test_per_row_groups_equal_each_row_alone():
    x = rand(3, 5, D)
    a, b = sl.Add(rand(D), alpha=2.0, positions="all"), sl.Add(rand(D), alpha=-1.0, positions=[0, 2])
    ctx = StepContext(3, 5, 0, torch.zeros(3, dtype=torch.long), torch.full((3,), 5))
    site = Site("resid_post", 0)
    op = compile_rows([a, None, b], site, (D,), x)
    out = op(x, ctx)
    assert torch.allclose(out[0], a(x[:1])[0])
    assert torch.equal(out[1], x[1])
    mask = torch.zeros(1, 5, dtype=torch.bool)
    mask[0, [0, 2]] = True
    assert torch.allclose(out[2], b(x[2:], mask=mask)[0])


@pytest.mark.parametrize("make", [
    lambda: sl.Add(rand(D), alpha=1.5),
    lambda: sl.Ablate(rand(D)),
    lambda: sl.Ablate(rand(2, D)),
    lambda: sl.Rotate(rand(D), angle=25.0),
    lambda: sl.Rotate(rand(D), angle=-40.0, plane=rand(D)),
    lambda: sl.Rotate(rand(D), angle=60.0, plane=rand(D), mode="absolute"),
    lambda: sl.Add(rand(D), alpha=2.0, norm_match=True),
], ids=["add", "ablate", "ablate-k2", "rotate", "rotate-plane", "rotate-absolute", "add-norm-match"])
def test_rows_without_the_intervention_stay_bit_identical(make):
    """A mixed batch (two recipes and an untouched row, stacked into one op) equals each row alone,
    whether the untouched row gets neutral parameters or a row mask."""
    x = rand(3, 4, D)
    a, b = make(), make()
    ctx = StepContext(3, 4, 0, torch.zeros(3, dtype=torch.long), torch.full((3,), 4))
    out = compile_rows([a, None, b], Site("resid_post", 0), (D,), x)(x, ctx)
    assert torch.equal(out[1], x[1])
    torch.testing.assert_close(out[0], a(x[:1])[0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out[2], b(x[2:])[0], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("bad", ["middle", [], 1.5, ["a"]])
def test_bad_positions_are_refused(bad):
    with pytest.raises(sl.SteerlabError, match="positions"):
        sl.Add(torch.ones(D), positions=bad)


def test_wrong_width_is_refused(tiny_llama):
    with pytest.raises(sl.SteerlabError, match="width 7"):
        tiny_llama.logits(["hi"], steering=sl.Add(torch.ones(7), layers=[0]))


def test_layer_out_of_range_is_refused(tiny_llama):
    with pytest.raises(sl.SteerlabError, match="out of range"):
        tiny_llama.logits(["hi"], steering=sl.Add(torch.ones(tiny_llama.d_model), layers=[99]))


# --- inside a model: the same edit done by a plain forward hook ----------------------------------
def _reference_logits(model, texts, layer, edit):
    """Logits with ``edit`` applied by hand to block ``layer``'s output through a plain torch hook."""
    block = model.bound.blocks[layer]
    handle = block.register_forward_hook(lambda mod, args, out: edit(out))
    try:
        return model.logits(texts)
    finally:
        handle.remove()


INSIDE = {
    "add": (lambda v, w: sl.Add(v, alpha=1.5, layers=[1]), lambda v, w: (lambda h: h + 1.5 * v)),
    "ablate": (lambda v, w: sl.Ablate(v, layers=[1]),
               lambda v, w: (lambda h: h - (h @ (v / v.norm()))[..., None] * (v / v.norm()))),
    "clamp": (lambda v, w: sl.Clamp(v, value=0.7, layers=[1]),
              lambda v, w: (lambda h: h + (0.7 - h @ (v / v.norm()))[..., None] * (v / v.norm()))),
    "rotate": (lambda v, w: sl.Rotate(v, angle=25.0, plane=w, layers=[1]), None),
}


@pytest.mark.parametrize("name", list(INSIDE))
def test_inside_a_model_equals_a_hand_written_hook(name):
    from tiny import tiny_model

    m = tiny_model("qwen2")
    v, w = torch.randn(m.d_model), torch.randn(m.d_model)
    build, manual = INSIDE[name]
    if manual is None:  # rotation by hand in the (v, w) plane
        u1 = v / v.norm()
        u2 = w - (w @ u1) * u1
        u2 = u2 / u2.norm()
        t = math.radians(25.0)

        def manual_edit(h):
            a, c = (h @ u1)[..., None], (h @ u2)[..., None]
            return h - a * u1 - c * u2 + (a * math.cos(t) - c * math.sin(t)) * u1 + (a * math.sin(t) + c * math.cos(t)) * u2
    else:
        manual_edit = manual(v, w)
    texts = ["steer me", "another prompt here"]
    got = m.logits(texts, steering=sl.Steering([build(v, w)]))
    ref = _reference_logits(m, texts, 1, manual_edit)
    assert torch.allclose(got, ref, atol=1e-4)
    assert not torch.allclose(got, m.logits(texts), atol=1e-3)


def test_head_knockout_inside_a_model_equals_zeroing_the_output_projection_columns(tiny_llama):
    m = tiny_llama
    o_proj = m.bound.block_module(2, m.adapter.o_proj)
    texts = ["knock out a head"]
    got = m.logits(texts, steering=sl.Scale(0.0, site="attn.heads", layers=[2], index=[1]))
    saved = o_proj.weight.detach().clone()
    with torch.no_grad():
        o_proj.weight[:, m.d_head:2 * m.d_head] = 0
    try:
        ref = m.logits(texts)
    finally:
        with torch.no_grad():
            o_proj.weight.copy_(saved)
    assert torch.allclose(got, ref, atol=1e-5)


def test_conditional_fires_only_on_rows_whose_prompt_matches(tiny_llama):
    m = tiny_llama
    texts = ["alpha alpha alpha", "zzzz qqqq"]
    acts = m.capture(texts, sites=["layers.0.resid_post"], positions="mean")["layers.0.resid_post"]
    condition = acts[0] - acts[1]  # points at row 0's mean activation
    vec = torch.randn(m.d_model)
    add = sl.Add(vec, alpha=2.0, layers=[2])
    cond = sl.Conditional(add, condition, layer=0, threshold=0.0, metric="projection")
    # the score of each row, by hand: mean over prompt tokens, projected on the unit condition
    unit = condition / condition.norm()
    scores = acts @ unit
    fires = (scores > 0).tolist()
    assert fires[0] != fires[1]
    got = m.logits(texts, steering=cond)
    plain = m.logits(texts)
    steered = m.logits(texts, steering=add)
    for row, fired in enumerate(fires):
        assert torch.allclose(got[row], steered[row] if fired else plain[row], atol=1e-5)


def test_conditional_cast_metric_matches_its_formula():
    from steerlab.interventions.conditional import Conditional

    x, c = rand(3, 4, D), rand(D)
    c = c / c.norm()
    prompt = torch.ones(3, 4, dtype=torch.bool)
    score = Conditional.score(x, c[None], prompt, "cast", "mean")
    h = x.mean(1)
    target = torch.tanh((h @ c)[:, None] * c)
    ref = (h * target).sum(-1) / (h.norm(dim=-1) * target.norm(dim=-1))
    assert torch.allclose(score, ref, atol=1e-5)


@pytest.mark.parametrize("second_positions", ["all", "last"])
def test_a_batch_op_touches_the_rows_and_positions_a_hand_reference_does(second_positions):
    """Rows with the same kind share one op: whole-row masks (every position) and per-position masks."""
    from steerlab.interventions.plan import build_plan
    from steerlab.interventions.positions import StepContext

    d, n = 6, 5
    g = torch.Generator().manual_seed(3)
    v, w = torch.randn(d, generator=g), torch.randn(d, generator=g)
    a = sl.Steering([sl.Add(v, layers=[0])])
    b = sl.Steering([sl.Add(w, layers=[0], positions=second_positions)])
    plan = build_plan([a, None, b, a], 4, 2, lambda site: (d,), torch.zeros(1))
    (op,) = plan[sl.Site("resid_post", 0)]
    x = torch.randn(4, n, d, generator=g)
    ctx = StepContext(4, n, 0, torch.zeros(4, dtype=torch.long), torch.full((4,), n))
    expected = x.clone()
    expected[0] += v
    expected[3] += v
    if second_positions == "all":
        expected[2] += w
    else:
        expected[2, n - 1] += w
    assert torch.allclose(op(x, ctx), expected)
    # a decoding step (one new token, 5 already cached): every row's token is touched
    step = StepContext(4, 1, n, torch.zeros(4, dtype=torch.long), torch.full((4,), n), state=ctx.state)
    x1 = torch.randn(4, 1, d, generator=g)
    expected1 = x1.clone()
    expected1[0] += v
    expected1[2] += w
    expected1[3] += v
    assert torch.allclose(op(x1, step), expected1)


# --- the registry and declared capabilities ------------------------------------------------------
def test_a_second_class_with_a_taken_kind_fails_at_class_creation():
    from steerlab.interventions.base import REGISTRY

    before = dict(REGISTRY)
    with pytest.raises(sl.SteerlabError, match="kind 'add' is already taken"):
        type("MyAdd", (sl.Intervention,), {"kind": "add"})
    with pytest.raises(sl.SteerlabError, match="must set its own kind"):
        type("Tweaked", (sl.Add,), {})  # inherits Add's kind by accident
    assert REGISTRY == before and REGISTRY["add"] is sl.Add


def test_an_unknown_kind_on_load_is_one_clear_line(tmp_path):
    path = sl.Steering([sl.Add(torch.ones(4), layers=[0])]).save(tmp_path / "r.steer")
    doc = json.loads((path / "recipe.json").read_text())
    doc["interventions"][0]["kind"] = "warp"
    (path / "recipe.json").write_text(json.dumps(doc))
    with pytest.raises(sl.SteerlabError) as err:
        sl.Steering.load(path)
    message = str(err.value)
    assert "\n" not in message and "unknown intervention kind 'warp'" in message and "add" in message


def test_capabilities_say_which_edits_are_affine_and_which_sense():
    v = torch.ones(4)
    assert sl.Add(v).capabilities().affine and not sl.Add(v, norm_match=True).affine
    assert sl.Ablate(v).affine and not sl.Clamp(v, min=0.0).affine and sl.Clamp(v, value=1.0).affine
    assert sl.Scale(0.5).affine and not sl.Scale(0.5, renorm=True).affine
    assert sl.Rotate(v, 10.0, plane=torch.tensor([0.0, 1.0, 0.0, 0.0])).affine and not sl.Rotate(v, 10.0).affine
    cond = sl.Conditional(sl.Add(v), v, layer=0, threshold=0.0)
    assert cond.capabilities().sensor and not cond.capabilities().context_free and not sl.Add(v).capabilities().sensor
    assert not sl.Patch(v).capabilities().context_free and sl.Add(v).capabilities().context_free
    # affine really means x -> A x + b: check it on random inputs
    x, y = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    for item in (sl.Add(v), sl.Ablate(v), sl.Clamp(v, value=1.0), sl.Scale(0.5)):
        f0 = item(torch.zeros(1, 1, 4))
        assert torch.allclose(item(x + y) - f0, (item(x) - f0) + (item(y) - f0), atol=1e-5), item
    f0 = sl.Clamp(v, min=0.0)(torch.zeros(1, 1, 4))
    clamp = sl.Clamp(v, min=0.0)
    assert not torch.allclose(clamp(-x) - f0, -(clamp(x) - f0), atol=1e-5)
