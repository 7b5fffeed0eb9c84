"""Traces captured while sampling equal a separate teacher-forced forward pass over the same tokens."""

from __future__ import annotations

import pytest
import torch

from steerlab.errors import SteerlabError
from steerlab.models.tokens import encode
from steerlab.reasoning import sample
from tiny import tiny_model

PROMPTS = ["The cat", "A much longer prompt here", "x"]


@pytest.fixture(scope="module")
def tiny():
    return tiny_model("llama")


def _reference(model, prompt, tokens):
    """Per-token hidden states (all layers) and log-probs of a plain forward pass over prompt + tokens."""
    ids = encode(model.tokenizer, [prompt], False)[0]
    full = torch.tensor([ids + tokens])
    with torch.no_grad():
        out = model.hf_model(input_ids=full, output_hidden_states=True)
    p = len(ids)
    rows = slice(p - 1, p - 1 + len(tokens))
    states = torch.stack([h[0, rows] for h in out.hidden_states[1:]], 1)  # [n, L, d]
    return states, torch.log_softmax(out.logits[0, rows].float(), -1)


def test_traced_states_and_logprobs_equal_a_second_forward_pass(tiny):
    traces = sample(tiny, PROMPTS, segment=1, top_k=4, max_new_tokens=10, seed=3, chat=False)
    n_layers = tiny.bound.n_layers
    for prompt, trace in zip(PROMPTS, traces):
        n = len(trace)
        assert n > 0 and trace.segments.shape[:2] == (n, n_layers)
        states, logp = _reference(tiny, prompt, trace.tokens)
        # the last layer's hidden_states entry is after the final norm; resid_post is before it
        torch.testing.assert_close(trace.segments[:, :-1], states[:, :-1], atol=1e-4, rtol=1e-4)
        chosen = logp.gather(1, torch.tensor(trace.tokens)[:, None])[:, 0]
        torch.testing.assert_close(trace.logprobs, chosen, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(trace.top_logprobs, logp.topk(4, -1).values, atol=1e-4, rtol=1e-4)


def test_segment_means_are_means_of_token_states(tiny):
    per_token = sample(tiny, PROMPTS, segment=1, max_new_tokens=11, seed=5, chat=False, layers=[0, 1])
    segmented = sample(tiny, PROMPTS, segment=4, max_new_tokens=11, seed=5, chat=False, layers=[0, 1])
    for a, b in zip(per_token, segmented):
        assert a.tokens == b.tokens
        chunks = [a.segments[i:i + 4].mean(0) for i in range(0, len(a), 4)]
        torch.testing.assert_close(b.segments, torch.stack(chunks), atol=1e-5, rtol=1e-5)


def test_stopper_finishes_one_row_mid_generation(tiny):
    traces = sample(tiny, PROMPTS, segment=2, max_new_tokens=9, seed=1, chat=False,
                    stop=lambda row, trace: row == 0 and len(trace) >= 3)
    assert len(traces[0]) == 3 and traces[0].stopped
    assert not traces[1].stopped and len(traces[1].logprobs) == len(traces[1])


def test_bad_arguments_raise(tiny):
    with pytest.raises(SteerlabError, match="segment"):
        sample(tiny, PROMPTS, segment=0)
    with pytest.raises(SteerlabError, match="layers"):
        sample(tiny, PROMPTS, layers=[99])


def test_end_rule_completes_a_row_at_its_stop_sequence_without_stopping_it(tiny):
    free = sample(tiny, PROMPTS, segment=2, max_new_tokens=9, do_sample=False, chat=False)
    assert len(free[0]) >= 5, "the test needs a row that runs at least 5 tokens"
    stop_sequence = free[0].tokens[:4]
    ended = sample(tiny, PROMPTS, segment=2, max_new_tokens=9, do_sample=False, chat=False,
                   end=lambda tokens: tokens == stop_sequence)
    assert ended[0].tokens == stop_sequence and not ended[0].stopped
    assert ended[0].top_logprobs.shape[0] == 4 and ended[0].segments.shape[0] == 2
    for a, b in zip(free[1:], ended[1:]):  # rows whose text never matches run as before
        if a.tokens[:4] != stop_sequence:
            assert a.tokens == b.tokens
