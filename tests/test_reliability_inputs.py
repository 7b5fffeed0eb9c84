"""Bad inputs to the library itself: positions outside the prompts, prompts past the context,
NaN/inf and absurd strengths (rows of docs/reliability.md)."""

from __future__ import annotations

import re

import pytest
import torch
from typer.testing import CliRunner

import steerlab as sl
from steerlab.cli import app, common
from steerlab.errors import SteerlabError
from steerlab.evaluate.forward import continuation_logprobs
from steerlab.models.tokens import encode
from test_positions_reference import reference

LAYER = 1


def _vec(model, scale: float = 8.0, seed: int = 0) -> torch.Tensor:
    return torch.randn(model.d_model, generator=torch.Generator().manual_seed(seed)) * scale


def _plain_logits(model, text: str, vec: torch.Tensor | None = None, at: int | None = None) -> torch.Tensor:
    """Last-token logits of ``text`` alone (no padding), ``vec`` added by a plain hook at token ``at`` of block LAYER."""
    ids = model.tokenizer(text, return_tensors="pt").input_ids

    def add(module, args, output):
        hidden = (output[0] if isinstance(output, tuple) else output).clone()
        hidden[0, at] += vec
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    handle = model.bound.blocks[LAYER].register_forward_hook(add) if vec is not None else None
    try:
        with torch.no_grad():
            return model.hf_model(input_ids=ids).logits[0, -1].float()
    finally:
        if handle is not None:
            handle.remove()


# --- positions outside the prompts ---------------------------------------------------------------
@pytest.mark.parametrize("positions", [-50, 40, [0, 40], [-50, -1]])
def test_a_position_outside_every_prompt_is_one_clear_error(tiny_llama, positions):
    steer = sl.Steering([sl.Add(_vec(tiny_llama), layers=[LAYER], positions=positions)])
    bad = 40 if positions in (40, [0, 40]) else -50
    for call in (lambda: tiny_llama.generate(["hi", "hello"], steering=steer, max_new_tokens=2),
                 lambda: tiny_llama.logits(["hi", "hello"], steering=steer),
                 lambda: tiny_llama.capture(["hi", "hello"], layers=[0], steering=steer)):
        with pytest.raises(SteerlabError, match=rf"index {bad} lies outside all 2 prompts it steers \(\d+ to \d+ tokens\)"):
            call()


def test_each_recipe_needs_a_prompt_its_positions_reach(tiny_llama):
    """Per-row recipes: an index that reaches only another row's prompt still steers nothing."""
    short = sl.Steering([sl.Add(_vec(tiny_llama), layers=[LAYER], positions=[10])])
    with pytest.raises(SteerlabError, match="index 10 lies outside the prompt it steers"):
        tiny_llama.logits(["hi", "a b c d e f g h i j"], steering=[short, None])
    tiny_llama.logits(["hi", "a b c d e f g h i j"], steering=[None, short])  # reaches its own prompt: fine
    inner = sl.Add(_vec(tiny_llama), layers=[LAYER], positions=[40])
    cond = sl.Conditional(inner, _vec(tiny_llama, 1.0, 1), layer=0, threshold=0.0)
    with pytest.raises(SteerlabError, match="index 40"):
        tiny_llama.logits(["hi"], steering=sl.Steering([cond]))
    patch = sl.Patch(torch.zeros(2, tiny_llama.d_model), layers=[LAYER], positions=[0, 40])
    with pytest.raises(SteerlabError, match="index 40"):
        tiny_llama.logits(["hi", "hello"], steering=patch)


def test_a_position_outside_some_prompts_steers_the_others_only(tiny_llama):
    """Reference: each text alone, a plain hook adding the vector at that token; a short text is untouched."""
    long, short = "a b c d e f g h i j", "hi"
    n_short = len(tiny_llama.tokenizer(short).input_ids)
    vec = _vec(tiny_llama)
    for index, at_long in [(n_short + 1, n_short + 1), (-(n_short + 1), -(n_short + 1))]:
        steer = sl.Add(vec, layers=[LAYER], positions=[index])
        got = tiny_llama.logits([long, short], steering=steer)
        torch.testing.assert_close(got[0], _plain_logits(tiny_llama, long, vec, at_long), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(got[1], _plain_logits(tiny_llama, short), rtol=1e-4, atol=1e-4)
        assert not torch.allclose(got[0], _plain_logits(tiny_llama, long), atol=1e-3)  # it did steer


def test_an_index_never_selects_generated_tokens(tiny_llama):
    """An index past a short prompt does not land on that row's generated tokens (nor its left padding)."""
    long, short = "tell me a story about", "x"
    n_short = len(encode(tiny_llama.tokenizer, [short], chat=True)[0])
    vec = _vec(tiny_llama)
    eos = {int(tiny_llama.hf_model.generation_config.eos_token_id)}
    for index in (n_short + 1, -(n_short + 1)):
        got = tiny_llama.generate([long, short], steering=sl.Add(vec, layers=[LAYER], positions=[index]),
                                  max_new_tokens=5)
        assert got.tokens[0] == reference(tiny_llama, long, LAYER, vec, [index], 5, eos)
        assert got.tokens[1] == tiny_llama.generate([short], max_new_tokens=5).tokens[0]
    patch = sl.Patch(torch.stack([vec, vec]), layers=[LAYER], positions=[0, n_short + 1])  # row k at index k
    got = tiny_llama.generate([long, short], steering=patch, max_new_tokens=5)
    assert got.tokens[1] == tiny_llama.generate([short], steering=sl.Patch(vec, layers=[LAYER], positions=[0]),
                                                max_new_tokens=5).tokens[0]


def test_a_capture_index_must_exist_in_every_text_and_is_checked_first(tiny_llama, tmp_path):
    with pytest.raises(SteerlabError, match=r"index 40 lies outside texts\[1\] \('hi'\), which has \d+ tokens"):
        tiny_llama.capture(["a b c d e f g h i j k l m n o p q r s t u", "hi"], layers=[0], positions=[0, 40],
                           out=tmp_path / "acts")
    assert not (tmp_path / "acts").exists()  # refused before any batch ran


# --- prompts longer than the context -------------------------------------------------------------
LONG = "hello " * 60  # 360 tokens for the tiny tokenizer; its model holds 256 positions


def test_a_prompt_past_the_context_is_refused_not_truncated(tiny_llama, tmp_path):
    for call in (lambda: tiny_llama.generate(["hi", LONG], max_new_tokens=2),
                 lambda: tiny_llama.logits(["hi", LONG]),
                 lambda: tiny_llama.capture(["hi", LONG], layers=[0], out=tmp_path / "acts")):
        with pytest.raises(SteerlabError, match=r"\[1\] \('hello hello.*'\.\.\.\) has \d+ tokens, more than tiny-llama's "
                                                r"context of 256 tokens"):
            call()
    assert not (tmp_path / "acts").exists()
    prompt = "hello " * 35  # about 210 tokens: fits, but not with 100 more
    with pytest.raises(SteerlabError, match="max_new_tokens=100 would take it to .* context of 256"):
        tiny_llama.generate([prompt], max_new_tokens=100, chat=False)
    tiny_llama.generate([prompt], max_new_tokens=2, chat=False)


@pytest.mark.parametrize("argv", [["steer", "--direction", "{direction}", "-p", LONG, "--max-new-tokens", "2"],
                                  ["capture", "--texts", "{texts}", "--out", "{out}"]])
def test_the_cli_refuses_a_prompt_past_the_context_in_one_line(tmp_path, monkeypatch, tiny_llama, argv):
    monkeypatch.setattr(common, "load_model", lambda *a, **k: tiny_llama)
    direction = sl.Direction({i: torch.randn(tiny_llama.d_model) for i in range(3)}).save(tmp_path / "d.direction")
    texts = tmp_path / "texts.txt"
    texts.write_text(f"hi\n{LONG}\n")
    args = [a.format(direction=direction, texts=texts, out=tmp_path / "acts") for a in argv]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "context of 256 tokens" in lines[0], result.output


# --- NaN, inf and absurd strengths ---------------------------------------------------------------
V = torch.ones(8)
NAN_V = torch.tensor([1.0, float("nan")] + [0.0] * 6)
BAD = {
    "Add alpha nan": lambda: sl.Add(V, alpha=float("nan")),
    "Add alpha inf": lambda: sl.Add(V, alpha=float("-inf")),
    "Add alpha absurd": lambda: sl.Add(V, alpha=1e7),
    "Add alpha text": lambda: sl.Add(V, alpha="strong"),
    "Add vector nan": lambda: sl.Add(NAN_V),
    "Add vector absurd": lambda: sl.Add(V * 1e9),
    "Add dict vector inf": lambda: sl.Add({3: V * float("inf")}),
    "Rotate angle nan": lambda: sl.Rotate(V, angle=float("nan")),
    "Rotate angle absurd": lambda: sl.Rotate(V, angle=1e30),
    "Rotate threshold inf": lambda: sl.Rotate(V, angle=10, plane=V.flip(0), adaptive=True, threshold=float("inf")),
    "Rotate plane nan": lambda: sl.Rotate(V, angle=10, plane=NAN_V),
    "Scale factor nan": lambda: sl.Scale(float("nan")),
    "Scale factor absurd": lambda: sl.Scale(1e9),
    "Scale factors inf": lambda: sl.Scale([1.0, float("inf")], index=[0, 1]),
    "Clamp value nan": lambda: sl.Clamp(V, value=float("nan")),
    "Clamp min +inf": lambda: sl.Clamp(V, min=float("inf")),  # -inf is an open lower bound, allowed
    "Clamp max -inf": lambda: sl.Clamp(V, max=float("-inf")),
    "Clamp max absurd": lambda: sl.Clamp(V, max=1e12),
    "Ablate direction nan": lambda: sl.Ablate(NAN_V),
    "Patch value inf": lambda: sl.Patch(V * float("inf")),
    "Conditional threshold nan": lambda: sl.Conditional(sl.Add(V), V, layer=0, threshold=float("nan")),
    "Conditional condition nan": lambda: sl.Conditional(sl.Add(V), NAN_V, layer=0, threshold=0.1),
    "Direction vector nan": lambda: sl.Direction({0: NAN_V}),
    "to_gguf alpha nan": lambda: sl.Direction({1: V}).to_gguf("x.gguf", alpha=float("nan")),
}


@pytest.mark.parametrize("name", list(BAD))
def test_nan_inf_and_absurd_strengths_fail_at_construction(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SteerlabError, match=r"NaN or infinite|finite number of at most|must be a number|above the 1e\+06 allowed"):
        BAD[name]()
    assert not (tmp_path / "x.gguf").exists()


def test_large_but_sane_settings_still_work():
    assert sl.Add(V, alpha=-1e4).alpha == -1e4
    assert sl.Rotate(V, angle=-720).angle == -720
    assert sl.Scale(0).factor == 0 and sl.Scale([0, 2.5], index=[0, 1]).factor == [0.0, 2.5]
    assert sl.Clamp(V, min=-5e5, max=5e5).max == 5e5
    x = torch.randn(1, 2, 8)
    torch.testing.assert_close(sl.Add(V, alpha=2.0)(x), x + 2.0)


# --- counts and sampling settings in the library --------------------------------------------------
@pytest.mark.parametrize("call, message", [
    (lambda m: m.logits(["hi"], batch_size=0), "batch_size must be a positive integer"),
    (lambda m: m.logits(["hi"], batch_size=-1), "batch_size must be a positive integer"),
    (lambda m: list(continuation_logprobs(m, [[1, 2]], [[3]], batch_size=0)), "batch_size must be a positive integer"),
    (lambda m: m.generate(["hi"], do_sample=True, temperature=float("nan"), max_new_tokens=2), "temperature=nan"),
    (lambda m: m.generate(["hi"], do_sample=True, temperature=0, max_new_tokens=2), "temperature=0"),
    (lambda m: m.generate(["hi"], do_sample=True, top_p=5.0, max_new_tokens=2), "top_p=5.0"),
    (lambda m: m.generate(["hi"], do_sample=True, top_k=0, max_new_tokens=2), "top_k=0"),
])
def test_bad_counts_and_sampling_settings_are_one_clear_error(tiny_llama, call, message):
    with pytest.raises(SteerlabError, match=re.escape(message)):
        call(tiny_llama)


def test_the_vllm_front_end_refuses_positions_outside_the_prompt():
    """The plugin's ``process_inputs`` wrapper checks an index against the tokenised prompt (vLLM's own
    processing stands in as a function returning the request with its token ids)."""
    from types import SimpleNamespace

    from steerlab.engines.vllm import plugin, sampling_args

    def vllm_process(self, request_id, prompt, params):
        return SimpleNamespace(prompt_token_ids=[5, 6, 7], cache_salt=None)

    def ask(index):
        steer = sl.Steering([sl.Add(torch.ones(8), layers=[1], positions=[index])])
        return SimpleNamespace(extra_args=sampling_args(steer))

    with pytest.raises(ValueError, match=r"steerlab: .*index 40 lies outside the prompt it steers \(3 tokens\)"):
        plugin._process_inputs(vllm_process, None, "r1", "abc", ask(40))
    assert plugin._process_inputs(vllm_process, None, "r2", "abc", ask(-3)).cache_salt


def test_the_server_refuses_positions_outside_the_prompt(tiny_llama):
    serve_engine = pytest.importorskip("steerlab.serve.engine")
    engine = serve_engine.TransformersEngine(tiny_llama)
    try:
        steer = sl.Steering([sl.Add(_vec(tiny_llama), layers=[LAYER], positions=[40])])
        with pytest.raises(SteerlabError, match=r"index 40 lies outside the prompt it steers \(3 tokens\)"):
            engine.check(serve_engine.Job([5, 6, 7], steer))
        engine.check(serve_engine.Job([5, 6, 7], sl.Steering([sl.Add(_vec(tiny_llama), layers=[LAYER], positions=[2])])))
    finally:
        engine.close()
