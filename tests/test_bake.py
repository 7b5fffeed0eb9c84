"""sl.edit.bake: the saved checkpoint, loaded by plain transformers in another process, matches hook steering."""

from __future__ import annotations

import pytest
import torch

import steerlab as sl
from plain_transformers import in_fresh_process
from steerlab.edit import NotBakeableError, bake
from tiny import tiny_model

TEXTS = ["Hello there", "The cat sat on the mat, and then", "x"]
PROMPTS = ["Once upon a time", "2 + 2 ="]
NEW_TOKENS = 8


def _vectors(d: int = 64):
    g = torch.Generator().manual_seed(7)
    return torch.randn(d, generator=g), torch.randn(d, generator=g), torch.randn(d, generator=g)


def recipe(name: str, d: int = 64) -> sl.Steering:
    v, r, u = _vectors(d)
    if name == "add_post":
        return sl.Steering([sl.Add(v, alpha=2.0, layers=[0, 2])])
    if name == "add_mlp":
        return sl.Steering([sl.Add(v, alpha=1.5, layers=[1], site="mlp_out")])
    if name == "add_attn":
        return sl.Steering([sl.Add(v, alpha=2.0, layers=[1], site="attn_out")])
    if name == "ablate":
        return sl.recipes.directional_ablation(r)
    if name == "embed":
        return sl.Steering([sl.Ablate(r, site="embed"), sl.Add(u, alpha=0.5, site="embed")])
    if name == "combo":  # order matters: add, then ablate, at one writer; then later residual additions
        return sl.Steering([sl.Add(v, site="mlp_out", layers=[1]), sl.Ablate(r, site="mlp_out", layers=[1]),
                            sl.Add(u, alpha=3.0, site="resid_post", layers=[1]),
                            sl.Add(v, site="resid_pre", layers=[2]), *sl.recipes.directional_ablation(u)])
    raise ValueError(name)


CASES = [
    ("llama", "add_post"), ("llama", "add_attn"), ("llama", "ablate"), ("llama", "combo"),
    ("mistral", "ablate"), ("mistral", "embed"), ("qwen2", "ablate"), ("qwen3", "add_attn"), ("qwen3", "ablate"),
    ("gemma2", "embed"), ("gemma3", "embed"), ("gpt2", "add_post"), ("gpt2", "ablate"), ("gpt2", "combo"),
    ("neox_parallel", "add_post"), ("neox_parallel", "add_attn"), ("neox_parallel", "ablate"),
    ("neox_sequential", "add_mlp"), ("neox_sequential", "ablate"), ("neox_sequential", "combo"),
    ("smollm3", "add_post"), ("olmo", "add_attn"), ("olmo", "ablate"),
    ("granite", "combo"), ("granite", "embed"), ("granite", "add_attn"),
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Bake every case, save it, and load all of them in one plain-transformers process."""
    root = tmp_path_factory.mktemp("baked")
    jobs, refs = [], {}
    for family, name in CASES:
        model = tiny_model(family)
        steer = recipe(name)
        folder = root / f"{family}-{name}"
        bake(model, steer).save_pretrained(str(folder))
        refs[(family, name)] = (str(folder), model.logits(TEXTS, steering=steer, progress=False),
                                model.generate(PROMPTS, steering=steer, max_new_tokens=NEW_TOKENS, chat=False).tokens,
                                model.logits(TEXTS, progress=False))
        jobs.append({"dir": str(folder), "texts": TEXTS, "prompts": PROMPTS, "max_new_tokens": NEW_TOKENS})
    plain = in_fresh_process(jobs, root)
    return {case: (plain[folder], want, tokens, base) for case, (folder, want, tokens, base) in refs.items()}


@pytest.mark.parametrize("case", CASES, ids=[f"{f}-{n}" for f, n in CASES])
def test_baked_checkpoint_matches_hook_steering(runs, case):
    plain, want, tokens, base = runs[case]
    scale = want.abs().max()
    assert (plain["logits"] - want).abs().max() <= 1e-4 * scale
    assert plain["tokens"] == tokens
    # the recipe really changes the model (otherwise the comparison proves nothing)
    assert (want - base).abs().max() > 1e-2 * scale


def test_bias_switch_and_provenance_in_saved_config(runs):
    config = runs[("llama", "add_post")][0]["config"]
    assert config["mlp_bias"] is True and config["steerlab"]["switches"] == ["mlp_bias"]
    assert runs[("llama", "add_attn")][0]["config"]["attention_bias"] is True
    assert runs[("gpt2", "ablate")][0]["config"]["tie_word_embeddings"] is False


def test_bake_leaves_the_original_untouched_and_unties(tmp_path):
    model = tiny_model("gpt2", tied=True)
    before = {k: v.clone() for k, v in model.hf_model.state_dict().items()}
    baked = bake(model, recipe("ablate"))
    after = model.hf_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert model.hf_model.lm_head.weight is model.hf_model.transformer.wte.weight  # still tied
    assert torch.equal(baked.lm_head.weight, before["lm_head.weight"])  # unembedding kept
    assert not torch.equal(baked.transformer.wte.weight, before["transformer.wte.weight"])
    baked.save_pretrained(str(tmp_path))
    assert (tmp_path / "tokenizer.json").is_file() and (tmp_path / "config.json").is_file()


def test_orthogonalised_weights_match_hand_computation():
    """Weight orthogonalisation by hand (Arditi et al.): every writer's output has no component along r̂."""
    model = tiny_model("neox_sequential")
    _, r, _ = _vectors()
    baked = bake(model, sl.recipes.directional_ablation(r))
    rhat = r / r.norm()
    P = torch.eye(64) - torch.outer(rhat, rhat)
    for i, (old, new) in enumerate(zip(model.hf_model.gpt_neox.layers, baked.gpt_neox.layers)):
        torch.testing.assert_close(new.attention.dense.weight, P @ old.attention.dense.weight, atol=1e-6, rtol=0)
        torch.testing.assert_close(new.mlp.dense_4h_to_h.bias, P @ old.mlp.dense_4h_to_h.bias, atol=1e-6, rtol=0)
    torch.testing.assert_close(baked.gpt_neox.embed_in.weight, model.hf_model.gpt_neox.embed_in.weight @ P,
                               atol=1e-6, rtol=0)
    assert float((baked.gpt_neox.embed_in.weight.detach() @ rhat).abs().max()) < 1e-5


@pytest.mark.parametrize("family,name,words", [
    ("mistral", "add_post", "mlp_bias"), ("qwen2", "add_attn", "attention_bias"), ("qwen3", "add_post", "mlp_bias"),
    ("gemma2", "ablate", "post-norm"), ("gemma3", "add_post", "post-norm"), ("olmo", "add_post", "mlp_bias"),
    ("gemma3_multimodal", "add_attn", "post-norm"),
])
def test_families_without_an_exact_bake_are_refused(family, name, words):
    with pytest.raises(NotBakeableError, match=words):
        bake(tiny_model(family), recipe(name))


@pytest.mark.parametrize("item,words", [
    (lambda v: sl.Rotate(v, angle=30.0, layers=[1]), "rotation"),
    (lambda v: sl.Conditional(sl.Add(v, layers=[2]), v, layer=0, threshold=0.1), "conditional"),
    (lambda v: sl.Add(v, layers=[1], positions="last"), "positions='last'"),
    (lambda v: sl.Add(v, layers=[1], positions=[0, 1]), "positions"),
    (lambda v: sl.Add(v, layers=[1], norm_match=True), "norm_match"),
    (lambda v: sl.Ablate(v, layers=[1], site="resid_post"), "directional_ablation"),
    (lambda v: sl.Add(v, layers=[1], site="mlp_in"), "not a bias"),
    (lambda v: sl.Clamp(v, value=1.0, layers=[1]), "cannot be baked"),
])
def test_non_affine_recipes_are_refused_with_a_reason(tiny_llama, item, words):
    v, _, _ = _vectors()
    with pytest.raises(NotBakeableError, match=words):
        bake(tiny_llama, sl.Steering([item(v)]))


def test_bake_rejects_a_recipe_for_another_model(tiny_llama):
    other = tiny_model("gpt2")
    from steerlab.directions.direction import Direction

    d = Direction({1: torch.ones(64)}, meta={"model": other.fingerprint})
    with pytest.raises(sl.SteerlabError, match="made for"):
        bake(tiny_llama, sl.Steering([sl.Add(d)]))


@pytest.mark.slow
def test_embedded_model_bake_round_trip(smollm, tmp_path):
    """SmolLM2 (tied embeddings): refusal-style ablation plus an addition, saved and reloaded without steerlab."""
    g = torch.Generator().manual_seed(0)
    r, v = torch.randn(smollm.d_model, generator=g), torch.randn(smollm.d_model, generator=g)
    steer = sl.recipes.directional_ablation(r) + sl.Add(v / v.norm() * 8.0, layers=[10, 11])
    texts = ["The capital of France is", "Tell me about your day."]
    prompts = ["Write one sentence about the sea."]
    bake(smollm, steer).save_pretrained(str(tmp_path / "baked"))
    want = smollm.logits(texts, steering=steer, progress=False)
    tokens = smollm.generate(prompts, steering=steer, max_new_tokens=12, chat=False).tokens
    plain = in_fresh_process([{"dir": str(tmp_path / "baked"), "texts": texts, "prompts": prompts,
                               "max_new_tokens": 12}], tmp_path)[str(tmp_path / "baked")]
    assert (plain["logits"] - want).abs().max() <= 1e-4 * want.abs().max()
    assert plain["tokens"] == tokens
    assert plain["config"]["tie_word_embeddings"] is False


def test_granite_multipliers_are_folded_into_the_edit():
    """Granite multiplies writer outputs before the residual stream (and its embeddings); the sites include
    the multipliers, so an addition anywhere on the residual stream bakes exactly, as a bias divided by them."""
    model = tiny_model("granite")
    assert model.bound.residual_multiplier == pytest.approx(0.22) and model.bound.embedding_multiplier == 3.0
    v, r, _ = _vectors()
    steer = sl.Steering([sl.Add(v, alpha=3.0, layers=[1], site="mlp_out"), sl.Add(v, site="embed"),
                         sl.Add(r, layers=[0], site="resid_pre"), sl.Add(v, layers=[2], site="resid_mid"),
                         sl.Add(r, layers=[1], site="resid_post")]) + sl.recipes.directional_ablation(r)
    baked = bake(model, steer)
    want = model.logits(TEXTS, steering=steer, progress=False)
    got = sl.Model(baked, model.tokenizer).logits(TEXTS, progress=False)
    assert (got - want).abs().max() <= 1e-4 * want.abs().max()
    assert (want - model.logits(TEXTS, progress=False)).abs().max() > 1e-2 * want.abs().max()
    # an addition alone: the bias it creates is the addition divided by the residual multiplier
    only = bake(model, sl.Add(v, layers=[2], site="attn_out"))
    bias = only.model.layers[2].self_attn.o_proj.bias.detach()
    assert torch.allclose(bias * 0.22, v, atol=1e-5)
