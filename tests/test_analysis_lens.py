"""Logit lens and commitment layer against hand computations on tiny models, and on the embedded model."""

from __future__ import annotations

import pytest
import torch

import steerlab as sl
from analysis_refs import hidden, hooked, last_logits, set_rows
from steerlab.analysis.lens import _earliest_stable

TEXT = "hello world"


def _rms_readout(model, h):
    norm = model.hf_model.model.norm
    x = h / torch.sqrt(h.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon) * norm.weight
    return x @ model.hf_model.lm_head.weight.T


def test_lens_matches_a_hand_readout_at_every_layer(tiny_llama):
    model = tiny_llama
    target_id = model.tokenizer("x", add_special_tokens=False)["input_ids"][0]
    table = sl.analysis.logit_lens(model, TEXT, target="x", positions="all", k=3)
    states = hidden(model, TEXT)
    final = torch.log_softmax(last_logits_all(model), -1)
    assert len(table) == model.n_layers * len(states[0])
    for layer in range(model.n_layers - 1):
        logp = torch.log_softmax(_rms_readout(model, states[layer + 1]), -1)
        rows = table[table["layer"] == layer].sort_values("position")
        rank = (logp > logp[:, [target_id]]).sum(-1) + 1
        assert rows["target_rank"].tolist() == rank.tolist()
        assert torch.allclose(torch.tensor(rows["target_prob"].tolist()), logp[:, target_id].exp(), atol=1e-5)
        kl = (final.exp() * (final - logp)).sum(-1)
        assert torch.allclose(torch.tensor(rows["kl_to_final"].tolist()), kl, atol=1e-4)
        top = logp.argmax(-1)
        assert rows["top1"].tolist() == [model.tokenizer.decode([int(t)]) for t in top]


def last_logits_all(model):
    from analysis_refs import logits_all

    return logits_all(model, TEXT)


def test_last_layer_of_the_lens_is_the_models_output(any_tiny):
    model = any_tiny
    table = sl.analysis.logit_lens(model, [TEXT, "abc"], target="x", positions="last", k=1)
    target_id = model.tokenizer("x", add_special_tokens=False)["input_ids"][0]
    for i, text in enumerate([TEXT, "abc"]):
        row = table[(table["text"] == i) & (table["layer"] == model.n_layers - 1)].iloc[0]
        probs = torch.softmax(last_logits(model, text), -1)  # includes Gemma 2's soft-capping
        assert row["target_prob"] == pytest.approx(float(probs[target_id]), abs=1e-5)
        assert row["kl_to_final"] == pytest.approx(0.0, abs=1e-5)


def test_multi_token_target_is_refused_with_a_hint(tiny_llama):
    with pytest.raises(sl.SteerlabError, match="single token"):
        sl.analysis.logit_lens(tiny_llama, TEXT, target="xy")


def test_earliest_stable():
    assert _earliest_stable([False, True, False, True, True]) == 3
    assert _earliest_stable([True, True]) == 0
    assert _earliest_stable([True, False]) is None


def _text_with_a_single_token_answer(model):
    """A prompt whose top next token decodes to text that encodes back to that one token
    (a lone byte of a multi-byte character does not), and that answer."""
    for text in [TEXT] + [f"{TEXT} {word}" for word in ("and", "the", "so", "yes", "ok", "then")]:
        tid = int(last_logits(model, text).argmax())
        answer = model.tokenizer.decode([tid])
        if model.tokenizer(answer, add_special_tokens=False)["input_ids"] == [tid]:
            return text, answer
    raise AssertionError("no prompt with a single-token answer")


def test_commitment_layer_reads_the_lens_ranks(tiny_llama):
    text, top = _text_with_a_single_token_answer(tiny_llama)  # the model's own answer
    found = sl.analysis.commitment_layer(tiny_llama, text, top)
    assert found.table["target_rank"].iloc[-1] == 1 and found.layer is not None
    ranks = found.table["target_rank"].tolist()
    expected = None
    for layer in range(len(ranks)):
        if all(r == 1 for r in ranks[layer:]):
            expected = layer
            break
    assert found.layer == expected
    table = sl.analysis.logit_lens(tiny_llama, text, target=top, positions="all", layers=[1, 2])
    ranks = table[table["position"] == len(text) - 1].sort_values("layer")["target_rank"].tolist()
    want = 1 if ranks == [1, 1] else 2
    assert sl.analysis.lens_commitment(table) == want


def test_commitment_patching_test_matches_a_hand_patch(tiny_llama):
    model = tiny_llama
    text, contrast = "hello world", "jello world"
    found = sl.analysis.commitment_layer(model, text, "x", contrast=contrast, contrast_target="y")
    tx, ty = (model.tokenizer(c, add_special_tokens=False)["input_ids"][0] for c in "xy")
    metric = lambda logits: float(logits[ty] - logits[tx])
    m_text, m_contrast = metric(last_logits(model, text)), metric(last_logits(model, contrast))
    source = hidden(model, contrast)
    positions = list(range(len(source[0]) - 1))
    for layer in range(model.n_layers):
        with hooked(model.hf_model.model.layers[layer], set_rows(positions, source[layer + 1][positions]
                                                                   if layer < model.n_layers - 1 else
                                                                   _raw_last(model, contrast)[positions])):
            patched = metric(last_logits(model, text))
        assert found.table["restored"][layer] == pytest.approx((patched - m_text) / (m_contrast - m_text), abs=1e-4)
    assert found.table["restored"].iloc[-1] == pytest.approx(0.0, abs=1e-5)  # the context no longer matters


def _raw_last(model, text):
    """The last block's output before the final norm (hidden_states holds it normed)."""
    store = {}

    def keep(x):
        store["h"] = x.detach().clone()
        return x

    with hooked(model.hf_model.model.layers[-1], keep):
        last_logits(model, text)
    return store["h"][0].float()


@pytest.mark.slow
def test_embedded_lens_puts_paris_on_top_by_the_last_layer(smollm):
    found = sl.analysis.commitment_layer(smollm, "The capital of France is", " Paris",
                                         contrast="The capital of Italy is", contrast_target=" Rome")
    ranks = found.table.set_index("layer")["target_rank"]
    assert ranks[smollm.n_layers - 1] == 1
    assert ranks[: smollm.n_layers // 2].min() > 100  # early layers do not know it yet
    assert found.layer is not None
    assert found.patch_layer is not None and found.patch_layer < smollm.n_layers - 1
    assert found.table["restored"][: found.patch_layer - 1].min() > 0.9  # before: the context decides
