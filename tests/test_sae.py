"""SAEs: the math against plain torch, the SAELens folder format (against the real sae-lens package when
installed), features as Directions, and feature edits inside the SAE basis."""

from __future__ import annotations

import importlib.util
import itertools
import json

import pytest
import torch

import steerlab as sl
from steerlab.errors import DataError, SteerlabError
from steerlab.sae import SAE, SAEEdit, hook_name, site_of_hook
from tiny import tiny_model

D_IN, D_SAE = 16, 40


def random_sae(arch: str, seed: int = 0, site: str = "layers.1.resid_post") -> SAE:
    g = torch.Generator().manual_seed(seed)
    w_dec = torch.randn(D_SAE, D_IN, generator=g)
    return SAE(torch.randn(D_IN, D_SAE, generator=g) * 0.5, torch.randn(D_SAE, generator=g) * 0.1, w_dec,
               torch.randn(D_IN, generator=g) * 0.1, arch, site, k=5 if arch == "topk" else None,
               threshold=torch.rand(D_SAE, generator=g) * 0.3 if arch == "jumprelu" else None)


def reference_encode(sae: SAE, x: torch.Tensor) -> torch.Tensor:
    """Plain torch, written out: ReLU / top-k / JumpReLU of (x - b_dec) W_enc + b_enc."""
    pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
    if sae.architecture == "topk":
        out = torch.zeros_like(pre)
        for idx in itertools.product(*(range(n) for n in pre.shape[:-1])):
            row = pre[idx]
            top = sorted(range(row.shape[0]), key=lambda i: -float(row[i]))[: sae.k]
            for i in top:
                out[idx][i] = max(float(row[i]), 0.0)
        return out
    if sae.architecture == "jumprelu":
        return torch.where(pre > sae.threshold, pre.clamp_min(0), torch.zeros_like(pre))
    return pre.clamp_min(0)


@pytest.mark.parametrize("arch", ["standard", "topk", "jumprelu"])
def test_encode_decode_match_plain_torch(arch):
    sae = random_sae(arch)
    x = torch.randn(3, 4, D_IN)
    f = sae.encode(x)
    torch.testing.assert_close(f, reference_encode(sae, x))
    torch.testing.assert_close(sae.decode(f), f @ sae.W_dec + sae.b_dec)
    if arch == "topk":
        assert int((f > 0).sum(-1).max()) <= 5


@pytest.mark.parametrize("arch", ["standard", "topk", "jumprelu"])
def test_saelens_folder_round_trip(tmp_path, arch):
    sae = random_sae(arch)
    sae.save(tmp_path / "s")
    cfg = json.loads((tmp_path / "s" / "cfg.json").read_text())
    assert cfg["architecture"] == arch and cfg["metadata"]["hook_name"] == "blocks.1.hook_resid_post"
    back = sl.sae.load(tmp_path / "s")
    assert back.architecture == arch and back.site == "layers.1.resid_post" and back.k == sae.k
    x = torch.randn(5, D_IN)
    torch.testing.assert_close(back(x), sae(x))
    with pytest.raises(SteerlabError, match="already holds"):
        sae.save(tmp_path / "s")
    sae.save(tmp_path / "s", overwrite=True)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(SteerlabError, match="not a saved SAE"):
        sae.save(tmp_path / "other", overwrite=True)


def test_load_refuses_what_it_cannot_reproduce(tmp_path):
    sae = random_sae("standard")
    sae.save(tmp_path / "s")
    cfg = json.loads((tmp_path / "s" / "cfg.json").read_text())
    cfg["normalize_activations"] = "expected_average_only_in"
    (tmp_path / "s" / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(DataError, match="normalize_activations"):
        sl.sae.load(tmp_path / "s")
    with pytest.raises(DataError, match="no SAE"):
        sl.sae.load(tmp_path / "missing")


def test_old_flat_config_with_log_threshold(tmp_path):
    from safetensors.torch import save_file

    sae = random_sae("jumprelu")
    folder = tmp_path / "old"
    folder.mkdir()
    save_file({"W_enc": sae.W_enc, "b_enc": sae.b_enc, "W_dec": sae.W_dec, "b_dec": sae.b_dec,
               "log_threshold": sae.threshold.log()}, str(folder / "sae_weights.safetensors"))
    (folder / "cfg.json").write_text(json.dumps({"d_in": D_IN, "d_sae": D_SAE, "architecture": "jumprelu",
                                                 "hook_point": "blocks.1.hook_resid_post"}))
    back = sl.sae.load(folder)
    assert back.site == "layers.1.resid_post"
    x = torch.randn(6, D_IN)
    torch.testing.assert_close(back.encode(x), sae.encode(x), rtol=1e-5, atol=1e-5)


def test_hook_names():
    assert hook_name("layers.12.mlp_out") == "blocks.12.hook_mlp_out"
    assert site_of_hook("blocks.3.hook_resid_pre") == "layers.3.resid_pre"
    assert site_of_hook("model.layers.7") == "layers.7.resid_post"
    assert site_of_hook("blocks.3.attn.hook_z") is None


HAS_SAELENS = importlib.util.find_spec("sae_lens") is not None


@pytest.mark.skipif(not HAS_SAELENS, reason="sae-lens is not installed (pip install 'steerlab[sae]'); the "
                                            "interop check needs the real package")
@pytest.mark.parametrize("arch", ["standard", "topk", "jumprelu"])
def test_interop_with_the_sae_lens_package(tmp_path, arch):
    from sae_lens import SAE as LensSAE

    ours = random_sae(arch)
    ours.save(tmp_path / "ours")
    theirs = LensSAE.load_from_disk(str(tmp_path / "ours"), device="cpu")
    assert theirs.cfg.architecture() == arch
    x = torch.randn(7, D_IN)
    with torch.no_grad():
        torch.testing.assert_close(theirs.encode(x), ours.encode(x))
        torch.testing.assert_close(theirs.decode(ours.encode(x)), ours.decode(ours.encode(x)))
    # the reverse: a folder sae-lens writes (its own weights, perturbed) reads back with equal outputs
    with torch.no_grad():
        for p in theirs.parameters():
            p.add_(0.01 * torch.randn_like(p))
    theirs.save_model(str(tmp_path / "theirs"))
    back = sl.sae.load(tmp_path / "theirs")
    assert back.architecture == arch
    with torch.no_grad():
        torch.testing.assert_close(back.encode(x), theirs.encode(x))
        torch.testing.assert_close(back(x), theirs.decode(theirs.encode(x)))


# --- features and edits on a tiny model ---------------------------------------------------------
LAYER = 1


def model_sae(model, arch: str = "topk", seed: int = 0) -> SAE:
    g = torch.Generator().manual_seed(seed)
    d = model.d_model
    k = 6 if arch == "topk" else None
    thr = torch.rand(D_SAE, generator=g) * 0.2 if arch == "jumprelu" else None
    return SAE(torch.randn(d, D_SAE, generator=g) / d ** 0.5, torch.randn(D_SAE, generator=g) * 0.1,
               torch.randn(D_SAE, d, generator=g) / d ** 0.5, torch.randn(d, generator=g) * 0.1, arch,
               f"layers.{LAYER}.resid_post", k=k, threshold=thr)


TEXTS = ["hello there", "a second, longer text"]


def hooked_logits(model, edit):
    """Logits with ``edit(x)`` applied to layer LAYER's output by a plain forward hook."""
    layer = model.hf_model.model.layers[LAYER]

    def hook(module, args, output):
        if isinstance(output, tuple):
            return (edit(output[0]), *output[1:])
        return edit(output)

    handle = layer.register_forward_hook(hook)
    try:
        return model.logits(TEXTS)
    finally:
        handle.remove()


@pytest.mark.parametrize("arch", ["standard", "topk", "jumprelu"])
def test_clamping_a_feature_to_its_own_value_changes_nothing(arch):
    model = tiny_model("llama")
    sae = model_sae(model, arch)
    clean = model.logits(TEXTS)
    same = model.logits(TEXTS, steering=sl.Steering([SAEEdit(sae, scale={3: 1.0, 7: 1.0})]))
    torch.testing.assert_close(same, clean, rtol=0, atol=1e-6)


def test_clamp_and_scale_match_a_hand_written_hook():
    model = tiny_model("llama")
    sae = model_sae(model, "standard")

    def reference(x):
        f = ((x - sae.b_dec) @ sae.W_enc + sae.b_enc).clamp_min(0)
        new = f.clone()
        new[..., 5] = 3.0
        new[..., 9] = 0.5 * f[..., 9]
        return x + (new - f) @ sae.W_dec  # error term kept: x - decode(f) + decode(new)

    want = hooked_logits(model, reference)
    got = model.logits(TEXTS, steering=sl.Steering([SAEEdit(sae, clamp={5: 3.0}, scale={9: 0.5})]))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got, model.logits(TEXTS), atol=1e-3)


@pytest.mark.parametrize("arch", ["topk", "jumprelu"])
def test_reconstruction_splice_matches_a_hand_written_hook(arch):
    model = tiny_model("llama")
    sae = model_sae(model, arch)
    want = hooked_logits(model, lambda x: reference_encode(sae, x) @ sae.W_dec + sae.b_dec)
    got = model.logits(TEXTS, steering=SAEEdit(sae, error=False))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_edit_recipe_saves_and_loads(tmp_path):
    model = tiny_model("llama")
    sae = model_sae(model, "topk")
    steer = sl.Steering([SAEEdit(sae, clamp={2: 4.0}, scale={11: 0.0})])
    steer.save(tmp_path / "r.steer")
    back = sl.Steering.load(tmp_path / "r.steer")
    torch.testing.assert_close(model.logits(TEXTS, steering=back), model.logits(TEXTS, steering=steer))


def test_edit_refuses_bad_input():
    model = tiny_model("llama")
    sae = model_sae(model)
    with pytest.raises(SteerlabError, match="out of range"):
        SAEEdit(sae, clamp={D_SAE: 1.0})
    with pytest.raises(SteerlabError, match="both clamped and scaled"):
        SAEEdit(sae, clamp={1: 1.0}, scale={1: 2.0})
    with pytest.raises(SteerlabError, match="width"):
        model.logits(TEXTS, steering=SAEEdit(random_sae("standard")))


def test_feature_direction_works_with_every_intervention():
    model = tiny_model("llama")
    sae = model_sae(model)
    d = sae.feature(4)
    assert d.layers == [LAYER]
    torch.testing.assert_close(d[LAYER], sae.W_dec[4] / sae.W_dec[4].norm())
    x = torch.randn(1, 3, model.d_model)
    added = sl.Add(d, alpha=2.0)(x)
    torch.testing.assert_close(added, x + 2.0 * d[LAYER])
    for item in (sl.Add(d, alpha=2.0), sl.Clamp(d, value=1.0), sl.Ablate(d)):
        steered = model.logits(TEXTS, steering=sl.Steering([item]))
        assert not torch.allclose(steered, model.logits(TEXTS), atol=1e-4)
    baked = sl.edit.bake(model, sl.Steering([sl.Add(d, alpha=2.0)]))
    assert baked is not None


def test_clamping_to_the_captured_value_at_the_last_token_changes_nothing():
    model = tiny_model("llama")
    sae = model_sae(model, "standard")
    text = ["a second, longer text"]
    x = model.capture(text, sites=f"layers.{LAYER}.resid_post", positions="last")[f"layers.{LAYER}.resid_post"]
    f = sae.encode(x)[0]
    on = int(f.argmax())
    assert float(f[on]) > 0
    clean = model.logits(text)
    same = model.logits(text, steering=SAEEdit(sae, clamp={on: float(f[on])}, positions="last"))
    torch.testing.assert_close(same, clean, rtol=1e-5, atol=1e-5)
    moved = model.logits(text, steering=SAEEdit(sae, clamp={on: float(f[on]) + 5.0}, positions="last"))
    assert not torch.allclose(moved, clean, atol=1e-3)
