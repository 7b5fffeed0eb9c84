"""Position-restricted steering under the KV cache, against a hand-written uncached reference.

The reference decodes one prompt at a time with no cache and no padding, re-running the whole
sequence at every step with a plain torch forward hook that adds the vector at positions computed
by hand. steerlab decodes the prompts as one left-padded batch on the KV cache. Tokens must agree,
and steering must change the output (a silent no-op fails).
"""

from __future__ import annotations

import pytest
import torch

import steerlab as sl
from steerlab.errors import SteerlabError
from steerlab.models.forward import Layout, Tracker
from tiny import FAMILIES, tiny_model

PROMPTS = ["hello", "tell me a story about", "x y"]
POSITIONS = ["last", "generated", "prompt", [0, -1]]
STEPS = 6


def _expected_positions(spec, prompt_len: int, length: int) -> list[int]:
    """Unpadded positions a spec selects in a sequence of ``length`` tokens whose prompt has ``prompt_len``."""
    if spec == "all":
        return list(range(length))
    if spec == "prompt":
        return list(range(prompt_len))
    if spec == "generated":
        return list(range(prompt_len, length))
    if spec == "last":
        return list(range(prompt_len - 1, length))
    return sorted({p if p >= 0 else prompt_len + p for p in spec})


def _prompt_ids(model, prompt: str) -> torch.Tensor:
    text = model.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                               tokenize=False)
    return model.tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids


def reference(model, prompt: str, layer: int, vec: torch.Tensor, spec, steps: int, eos: set[int]) -> list[int]:
    """Greedy tokens with ``vec`` added to block ``layer``'s output at the hand-computed positions."""
    ids = _prompt_ids(model, prompt)
    prompt_len = ids.shape[1]

    def add(module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        hidden = hidden.clone()
        for p in _expected_positions(spec, prompt_len, hidden.shape[1]):
            hidden[0, p] += vec
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    handle = model.bound.blocks[layer].register_forward_hook(add)
    out: list[int] = []
    try:
        with torch.no_grad():
            for _ in range(steps):
                nxt = int(model.hf_model(input_ids=ids, use_cache=False).logits[0, -1].argmax())
                if nxt in eos:
                    break
                out.append(nxt)
                ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
    finally:
        handle.remove()
    return out


def _vec(model, scale: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(model.d_model, generator=g) * scale


def _check(model, prompts, layer, vec, spec, steps=STEPS, **kwargs):
    eos = {int(model.hf_model.generation_config.eos_token_id)}
    steer = sl.Steering([sl.Add(vec, layers=[layer], positions=spec)])
    got = model.generate(prompts, steering=steer, max_new_tokens=steps, **kwargs)
    want = [reference(model, p, layer, vec, spec, steps, eos) for p in prompts]
    assert got.tokens == want, f"positions={spec!r}"
    plain = model.generate(prompts, max_new_tokens=steps, **kwargs)
    assert got.tokens != plain.tokens, f"positions={spec!r} changed nothing: a silent no-op"


@pytest.fixture(scope="module", params=FAMILIES)
def family_model(request):
    return tiny_model(request.param, seed=1)


@pytest.mark.parametrize("spec", POSITIONS, ids=str)
def test_cached_positions_equal_the_uncached_reference_on_every_family(family_model, spec):
    _check(family_model, PROMPTS, 1, _vec(family_model, 3.0), spec)


@pytest.mark.parametrize("spec", ["last", [0, -1]], ids=str)
def test_static_cache_positions_equal_the_reference(tiny_llama, spec):
    _check(tiny_llama, PROMPTS, 1, _vec(tiny_llama, 3.0), spec, cache_implementation="static")


def test_rows_that_finish_early_do_not_shift_the_others(tiny_llama):
    """Make a token that row 0 generates early the EOS: row 0 stops, the others go on, all exact."""
    model, vec, spec = tiny_llama, _vec(tiny_llama, 3.0), "generated"
    config = model.hf_model.generation_config
    old = config.eos_token_id
    first = reference(model, PROMPTS[0], 1, vec, spec, STEPS, eos=set())
    others = [reference(model, p, 1, vec, spec, STEPS, eos=set()) for p in PROMPTS[1:]]
    stop = next((t for t in first[1:3] if all(t not in o for o in others)), None)
    assert stop is not None, "no token of row 0 is absent from the other rows; pick other prompts"
    config.eos_token_id = stop
    try:
        got = model.generate(PROMPTS, steering=sl.Add(vec, layers=[1], positions=spec), max_new_tokens=STEPS)
        want = [reference(model, p, 1, vec, spec, STEPS, eos={stop}) for p in PROMPTS]
    finally:
        config.eos_token_id = old
    assert len(got.tokens[0]) < STEPS and all(len(t) == STEPS for t in got.tokens[1:])
    assert got.tokens == want


@pytest.mark.slow
@pytest.mark.parametrize("spec", POSITIONS, ids=str)
def test_embedded_model_cached_positions_equal_the_reference(smollm, spec):
    prompts = ["Tell me about your day.", "What is the capital of France?"]
    _check(smollm, prompts, 12, _vec(smollm, 8.0, seed=3), spec, steps=8)


# --- the tracker refuses to guess ------------------------------------------------------------------
def _layout(batch=2, width=5, generating=True):
    return Layout(start=torch.tensor([0, 2][:batch]), prompt_end=torch.full((batch,), width), generating=generating)


def test_tracker_counts_cached_passes():
    tracker = Tracker(_layout(), "cached")
    first = tracker.begin(2, 5, torch.ones(2, 5), None)
    second = tracker.begin(2, 1, torch.ones(2, 6), torch.tensor([[5], [3]]))
    assert (first.offset, second.offset) == (0, 5)


def test_tracker_raises_when_the_mask_contradicts_its_count():
    tracker = Tracker(_layout(), "cached")
    tracker.begin(2, 5, torch.ones(2, 5), None)
    with pytest.raises(SteerlabError, match="lost track"):
        tracker.begin(2, 1, torch.ones(2, 3), None)  # a cache that was cut back


def test_tracker_raises_when_position_ids_contradict_its_count():
    tracker = Tracker(_layout(), "cached")
    tracker.begin(2, 5, None, None)
    with pytest.raises(SteerlabError, match="position ids"):
        tracker.begin(2, 1, None, torch.tensor([[0], [0]]))  # what offset-0 guessing would look like


def test_tracker_refuses_a_second_single_pass_and_a_wrong_batch():
    tracker = Tracker(_layout(generating=False), "single")
    tracker.begin(2, 5, torch.ones(2, 5), None)
    with pytest.raises(SteerlabError, match="second"):
        tracker.begin(2, 1, None, None)
    with pytest.raises(SteerlabError, match="rows"):
        Tracker(_layout(), "cached").begin(4, 5, None, None)


def test_tracker_checks_uncached_passes_grow_by_one():
    tracker = Tracker(_layout(), "uncached")
    assert tracker.begin(2, 5, torch.ones(2, 5), None).offset == 0
    assert tracker.begin(2, 6, torch.ones(2, 6), None).offset == 0
    with pytest.raises(SteerlabError, match="re-read"):
        tracker.begin(2, 1, None, None)


def test_a_second_forward_in_a_single_pass_call_raises(tiny_llama):
    from steerlab.models.forward import recipes_for, steered

    steer = sl.Add(_vec(tiny_llama, 1.0), layers=[1], positions="last")
    ids = torch.tensor([[5, 6, 7]])
    layout = Layout(torch.tensor([0]), torch.tensor([3]))
    with steered(tiny_llama, recipes_for(tiny_llama, steer, 1), layout, "single"), torch.no_grad():
        tiny_llama.hf_model(input_ids=ids, use_cache=False)
        with pytest.raises(SteerlabError, match="second"):
            tiny_llama.hf_model(input_ids=ids[:, -1:], use_cache=False)


def test_generate_refuses_arguments_that_change_rows(tiny_llama):
    with pytest.raises(SteerlabError, match="num_return_sequences"):
        tiny_llama.generate(["hi"], max_new_tokens=2, num_return_sequences=2)


def test_compiled_decoding_positions_equal_the_reference(tiny_llama, spec="generated"):
    """``compile=True``: static cache and a compiled forward; the tracker runs outside the graph."""
    _check(tiny_llama, PROMPTS, 1, _vec(tiny_llama, 3.0), spec, compile=True)


def test_tracker_resumes_from_an_existing_cache():
    tracker = Tracker(_layout(), "cached")
    tracker.resume(7)
    assert tracker.begin(2, 1, torch.ones(2, 8), None).offset == 7
    with pytest.raises(SteerlabError, match="resume"):
        tracker.resume(3)
