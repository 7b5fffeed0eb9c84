"""The vLLM plugin against steerlab's transformers path: same greedy tokens for every intervention
kind and position mode in one mixed batch, loud refusals, prefix-cache salting and read-outs."""

from __future__ import annotations

import json

import pytest
import torch

vllm = pytest.importorskip("vllm")

import steerlab as sl
from steerlab.engines import wire
from steerlab.engines.vllm import cache_salt, fetch_reads, sampling_args

PROMPTS = ["The weather today is", "My favourite food is", "Once upon a time, in a small village,",
           "The capital of France", "I think that robots", "Here is a list of fruits:"]
N_NEW = 6


def _vec(seed: int, d: int = 576) -> torch.Tensor:
    return torch.randn(d, generator=torch.Generator().manual_seed(seed))


def _recipes() -> dict[str, sl.Steering]:
    """One recipe per intervention kind and position mode, each strong enough to change the text."""
    v, w = _vec(0), _vec(1)
    return {
        "add-all": sl.Steering([sl.Add(v, alpha=4.0, layers=[10])]),
        "add-prompt": sl.Steering([sl.Add(v, alpha=6.0, layers=[8, 9], positions="prompt")]),
        "add-generated": sl.Steering([sl.Add(w, alpha=5.0, layers=[12], positions="generated")]),
        "add-last": sl.Steering([sl.Add(v, alpha=5.0, layers=[6], positions="last")]),
        "add-indices": sl.Steering([sl.Add(w, alpha=8.0, layers=[4], positions=[0, -1])]),
        "add-pre": sl.Steering([sl.Add(w, alpha=4.0, layers=[5], site="resid_pre")]),
        "ablate": sl.Steering([sl.Ablate(torch.stack([v, w]), layers=list(range(3, 20)))]),
        "rotate": sl.Steering([sl.Rotate(v, angle=60.0, layers=[7, 8, 9])]),
        "scale": sl.Steering([sl.Scale(2.5, layers=[14], positions="generated")]),
        "clamp": sl.Steering([sl.Clamp(w, value=80.0, layers=[8, 9, 10, 11])]),
        "patch": sl.Steering([sl.Patch(v * 3, layers=[9], positions=[1])]),
        "patch-rows": sl.Steering([sl.Patch(torch.stack([v, w]) * 3, layers=[9], positions=[0, -1])]),
        "two-items": sl.Steering([sl.Add(v, alpha=3.0, layers=[10]), sl.Ablate(w, layers=[10, 11])]),
        "conditional": sl.Steering([sl.Conditional(sl.Add(v, alpha=6.0, layers=[12, 13]), condition=w, layer=4,
                                                   threshold=-1.0, comparator=">", metric="projection")]),
    }


def _sp(extra=None, n=N_NEW):
    return vllm.SamplingParams(max_tokens=n, temperature=0, extra_args=extra)


@pytest.fixture(scope="module")
def model():
    return sl.load("smollm2")


def _tokens(out, model) -> list[int]:
    """vLLM's generated ids without the end-of-sequence token it keeps when it stops there."""
    ids = list(out.outputs[0].token_ids)
    stop = model.hf_model.generation_config.eos_token_id
    stops = set(stop if isinstance(stop, list) else [stop])
    return ids[:-1] if ids and ids[-1] in stops else ids


def _reference(model, prompts, recipes, n=N_NEW):
    out = model.generate(prompts, steering=recipes, max_new_tokens=n, chat=False)
    return [list(t) for t in out.tokens]


def test_every_kind_and_position_in_one_mixed_batch(llm, model):
    recipes = _recipes()
    names = list(recipes) + [None, None]
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(len(names))]
    rows = [recipes[n] if n else None for n in names]
    outs = llm.generate(prompts, [_sp(sampling_args(r) if r else None) for r in rows], use_tqdm=False)
    got = [_tokens(o, model) for o in outs]
    want = _reference(model, prompts, rows)
    plain = _reference(model, prompts, None)
    differ = [f"{n}: vLLM {g} != steerlab {w}" for n, g, w in zip(names, got, want) if g != w]
    unchanged = [n for n, w, p in zip(names, want, plain) if n is not None and w == p]
    assert not differ, differ
    assert not unchanged, f"{unchanged} do not change the text; the comparison would not test them"


def test_chat_and_registered_name(llm, model, tmp_path, monkeypatch):
    steer = _recipes()["add-all"]
    steer.save(tmp_path / "happy.steer")
    monkeypatch.setenv("STEERLAB_VLLM_RECIPES", f"happy={tmp_path / 'happy.steer'}")
    msgs = [[{"role": "user", "content": "Tell me about your day."}]]
    out = llm.chat(msgs, _sp(sampling_args("happy")), use_tqdm=False)
    want = model.generate(["Tell me about your day."], steering=steer, max_new_tokens=N_NEW, chat=True)
    assert _tokens(out[0], model) == list(want.tokens[0])


def test_unappliable_recipes_fail_loudly(llm):
    v = _vec(0)
    bad_site = sl.Steering([sl.Add(v, alpha=1.0, layers=[3], site="attn_out")])
    with pytest.raises(Exception, match="cannot reach site kind 'attn_out'"):
        llm.generate(["Hi"], _sp({"steerlab": {"steering": wire.to_json(bad_site)}}), use_tqdm=False)
    with pytest.raises(Exception, match="cannot reach site kind 'mlp_out'"):
        llm.chat([[{"role": "user", "content": "Hi"}]],
                 _sp({"steerlab": {"steering": wire.to_json(sl.Steering([sl.Add(v, layers=[2], site="mlp_out")]))}}),
                 use_tqdm=False)
    with pytest.raises(Exception, match="not registered"):
        llm.generate(["Hi"], _sp({"steerlab": {"steering": "nope"}}), use_tqdm=False)
    with pytest.raises(Exception, match="not JSON"):
        llm.generate(["Hi"], _sp({"steerlab": "{bad"}), use_tqdm=False)
    doc = wire.to_json(sl.Steering([sl.Add(v, layers=[2])]))
    doc["interventions"][0]["kind"] = "warp"
    with pytest.raises(Exception, match="unknown intervention kind 'warp'"):
        llm.generate(["Hi"], _sp({"steerlab": {"steering": doc}}), use_tqdm=False)


def test_prefix_cache_never_shared_across_recipes(llm, model):
    prefix = "Here is a long shared preamble about the history of ships and the sea. " * 6
    prompts = [prefix + "The sailor said", prefix + "The sailor said"]
    steer = _recipes()["add-prompt"]
    assert cache_salt(sampling_args(steer)) == cache_salt(sampling_args(steer)) is not None
    assert cache_salt(None) is None
    llm.generate(prompts[:1], _sp(), use_tqdm=False)  # fills the cache with unsteered KV for the prefix
    steered = llm.generate(prompts[1:], _sp(sampling_args(steer)), use_tqdm=False)
    want = _reference(model, prompts[1:], steer)
    assert _tokens(steered[0], model) == want[0]


def test_read_outs_match_a_capture(llm, model):
    v = _vec(3)
    steer = sl.Steering([sl.Add(_vec(0), alpha=3.0, layers=[4])])
    args = sampling_args(steer, probes={"p": (6, v, 0.5)}, means=[2, 6])
    plain = sampling_args(probes={"p": (6, v)}, means=[6])
    outs = llm.generate(PROMPTS[:2], [_sp(args, 4), _sp(plain, 4)], use_tqdm=False)
    reads = fetch_reads(llm, [args, plain])
    for o, r, recipe, bias, prompt in zip(outs, reads, [steer, None], [0.5, 0.0], PROMPTS[:2]):
        n_prompt = len(o.prompt_token_ids)
        n_run = n_prompt + len(o.outputs[0].token_ids) - 1  # the last generated token is never run
        assert len(r["scores"]["p"]) == n_run
        acts = model.capture([prompt], sites=["layers.2.resid_post", "layers.6.resid_post"], positions="all",
                             steering=recipe)
        x6 = acts["layers.6.resid_post"][0]
        assert x6.shape[0] == n_prompt
        torch.testing.assert_close(torch.tensor(r["scores"]["p"][:n_prompt]), x6 @ v + bias, rtol=1e-3, atol=1e-2)
        torch.testing.assert_close(torch.tensor(r["means"]["6"]["prompt"]), x6.mean(0), rtol=1e-3, atol=1e-3)
        assert r["counts"]["6.generated"] == n_run - n_prompt
        if recipe is None:  # generated tokens: the plain model's hidden states over the whole sequence
            ids = torch.tensor([list(o.prompt_token_ids) + list(o.outputs[0].token_ids)[:-1]])
            with torch.no_grad():
                hidden = model.hf_model(input_ids=ids, output_hidden_states=True).hidden_states[7][0]
            torch.testing.assert_close(torch.tensor(r["scores"]["p"]), hidden @ v, rtol=1e-3, atol=1e-2)
            torch.testing.assert_close(torch.tensor(r["means"]["6"]["generated"]), hidden[n_prompt:].mean(0),
                                       rtol=1e-3, atol=1e-3)
    assert fetch_reads(llm, [args])[0]["scores"] == {}  # handed over once


def test_vllm_xargs_form_is_accepted(llm, model):
    """Over vLLM's OpenAI server the ask arrives as a JSON string (``vllm_xargs`` holds flat values)."""
    steer = _recipes()["rotate"]
    text = json.dumps(sampling_args(steer)["steerlab"])
    out = llm.generate(PROMPTS[:1], _sp({"steerlab": text}), use_tqdm=False)
    assert _tokens(out[0], model) == _reference(model, PROMPTS[:1], steer)[0]


def test_scale_doc_example_runs(llm, monkeypatch):
    """docs/scale.md's vLLM example runs as written (on this session's engine)."""
    import re
    from pathlib import Path

    text = (Path(__file__).parents[2] / "docs" / "scale.md").read_text()
    block = re.search(r"```python\n(.*?)```", text, re.DOTALL).group(1)
    monkeypatch.setattr(vllm, "LLM", lambda *a, **k: llm)
    scope: dict = {}
    exec(compile(block, "docs/scale.md", "exec"), scope)  # noqa: S102 -- running the doc is the test
    outs, reads = scope["outs"], scope["reads"]
    assert outs[0].outputs[0].text != outs[1].outputs[0].text
    assert len(reads["scores"]["v"]) > 0 and len(reads["means"]["6"]["prompt"]) == 576


def test_capture_last_equals_steerlabs_capture(llm, model):
    """Every layer's last-token state read inside vLLM equals ``model.capture(positions="last")``."""
    from steerlab.engines.vllm import capture_last

    layers = [0, 7, 15, 29]
    steer = _recipes()["rotate"]
    for recipe in (None, steer):
        got = capture_last(llm, PROMPTS, layers, steering=recipe, chunk=2)
        want = model.capture(PROMPTS, sites="resid_post", layers=layers, positions="last", steering=recipe)
        for layer in layers:
            site = f"layers.{layer}.resid_post"
            assert got[site].shape == (len(PROMPTS), 576)
            torch.testing.assert_close(got[site], want[site].float(), rtol=1e-3, atol=2e-3)
