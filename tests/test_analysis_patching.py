"""Activation patching sweeps against hand patches with raw hooks, and the France/Italy check on the embedded model."""

from __future__ import annotations

import pytest

import steerlab as sl
from analysis_refs import hooked, last_logits, set_rows

CLEAN, CORRUPT = "hello world", "jello wormd"


def _ids(model, c):
    return model.tokenizer(c, add_special_tokens=False)["input_ids"][0]


def _capture_block_out(model, text, layer):
    store = {}

    def keep(x):
        store["h"] = x.detach().clone()
        return x

    with hooked(model.hf_model.model.layers[layer], keep):
        last_logits(model, text)
    return store["h"][0]


@pytest.mark.parametrize("mode", ["denoise", "noise"])
def test_sweep_matches_hand_patches(tiny_llama, mode):
    model = tiny_llama
    a, b = _ids(model, "x"), _ids(model, "y")
    table = sl.analysis.activation_patching(model, CLEAN, CORRUPT, answers=("x", "y"), sites="resid_post",
                                            mode=mode, batch_size=7)
    assert len(table) == model.n_layers * len(CLEAN)
    base, source = (CORRUPT, CLEAN) if mode == "denoise" else (CLEAN, CORRUPT)
    m_clean = float(last_logits(model, CLEAN)[a] - last_logits(model, CLEAN)[b])
    m_corrupt = float(last_logits(model, CORRUPT)[a] - last_logits(model, CORRUPT)[b])
    for layer in range(model.n_layers):
        src = _capture_block_out(model, source, layer)
        for pos in (0, 4, len(CLEAN) - 1):
            with hooked(model.hf_model.model.layers[layer], set_rows([pos], src[[pos]])):
                logits = last_logits(model, base)
            want = float(logits[a] - logits[b])
            row = table[(table["layer"] == layer) & (table["position"] == pos)].iloc[0]
            assert row["metric"] == pytest.approx(want, abs=1e-4)
            assert row["normalized"] == pytest.approx((want - m_corrupt) / (m_clean - m_corrupt), abs=1e-4)


def test_identical_prefix_positions_do_nothing_and_the_last_state_decides(tiny_llama):
    table = sl.analysis.activation_patching(tiny_llama, "abcdef", "abcxef", gold="z", sites=["resid_post", "attn_out"])
    early = table[table["position"] < 3]  # identical tokens before the first difference: identical states
    assert early["effect"].abs().max() < 1e-5
    last = table[(table["site"] == "resid_post") & (table["layer"] == tiny_llama.n_layers - 1) & (table["position"] == 5)]
    assert last["normalized"].iloc[0] == pytest.approx(1.0, abs=1e-4)
    assert set(table["site"]) == {"resid_post", "attn_out"}


def test_patching_heads_site_and_several_pairs(tiny_llama):
    table = sl.analysis.activation_patching(tiny_llama, ["abcd", "wxyz"], ["abce", "wxyy"], answers=[("d", "e"), ("z", "y")],
                                            sites="attn.heads", layers=[1], mode="both")
    assert set(table["pair"]) == {0, 1} and set(table["mode"]) == {"denoise", "noise"}
    summary = sl.analysis.patching_summary(table)
    assert len(summary) == 2 * 4


def test_bad_inputs_are_clear(tiny_llama):
    with pytest.raises(sl.SteerlabError, match="same token length"):
        sl.analysis.activation_patching(tiny_llama, "abc", "abcd", gold="x")
    with pytest.raises(sl.SteerlabError, match="exactly one of"):
        sl.analysis.activation_patching(tiny_llama, "abc", "abd")
    with pytest.raises(sl.SteerlabError, match="mode"):
        sl.analysis.activation_patching(tiny_llama, "abc", "abd", gold="x", mode="sideways")
    with pytest.raises(sl.SteerlabError, match="cannot be swept"):
        sl.analysis.activation_patching(tiny_llama, "abc", "abd", gold="x", sites="logits")


@pytest.mark.slow
def test_embedded_answer_token_position_carries_the_difference(smollm):
    table = sl.analysis.activation_patching(smollm, "The capital of France is", "The capital of Italy is",
                                            answers=(" Paris", " Rome"), layers=[4, 12], positions=[0, 3])
    assert table["clean_metric"].iloc[0] > 0 > table["corrupted_metric"].iloc[0]
    by = table.set_index(["layer", "position"])["normalized"]
    for layer in (4, 12):
        assert by[(layer, 3)] > 0.9  # " France" restores Paris
        assert abs(by[(layer, 0)]) < 0.05  # "The" does nothing
