"""Importing peers' vectors: repeng GGUF files and steering-vectors objects saved with torch."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch

import steerlab as sl
from steerlab.edit import from_repeng, from_steering_vectors
from test_gguf_vectors import fixture_vectors

FIXTURES = Path(__file__).parent / "fixtures"


def test_repeng_gguf():
    d = from_repeng(FIXTURES / "repeng_controlvector.gguf")
    assert d.meta["method"] == "repeng" and d.meta["site"] == "resid_post"
    for layer, v in fixture_vectors().items():
        np.testing.assert_array_equal(d[layer].numpy(), v)


def test_pickled_steering_vector_is_read_without_running_code():
    """The fixture is torch.save(SteeringVector(...)) made by steering-vectors itself; it is not importable here."""
    import sys

    assert "steering_vectors" not in sys.modules
    d = from_steering_vectors(FIXTURES / "steering_vector.pt")
    assert "steering_vectors" not in sys.modules
    assert d.meta["site"] == "resid_post" and d.meta["layer_type"] == "decoder_block"
    for layer, v in fixture_vectors().items():
        np.testing.assert_array_equal(d[layer].numpy(), v)


def test_plain_dicts_and_objects(tmp_path):
    torch.save({3: torch.ones(4), 5: torch.zeros(4)}, tmp_path / "plain.pt")
    assert from_steering_vectors(tmp_path / "plain.pt").layers == [3, 5]
    torch.save({"layer_activations": {2: torch.ones(4)}, "layer_type": "mlp"}, tmp_path / "typed.pt")
    assert from_steering_vectors(tmp_path / "typed.pt").meta["site"] == "mlp_out"

    class Like:
        layer_activations: ClassVar[dict[int, torch.Tensor]] = {1: torch.arange(3.0)}
        layer_type = "self_attn"

    d = from_steering_vectors(Like())
    assert d.meta["site"] == "attn_out" and torch.equal(d[1], torch.arange(3.0))


class Evil:
    def __reduce__(self):
        return (print, ("this would run",))


def test_unsafe_pickles_are_refused_unless_allowed(tmp_path):
    torch.save({"layer_activations": {1: torch.ones(2)}, "x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(sl.SteerlabError, match="will not load") as refused:
        from_steering_vectors(tmp_path / "evil.pt")
    assert "allow_pickle" not in str(refused.value)  # the refusal never suggests the unsafe flag
    with pytest.raises(sl.SteerlabError, match="layer_type"):
        torch.save({"layer_activations": {1: torch.ones(2)}, "layer_type": "weird"}, tmp_path / "weird.pt")
        from_steering_vectors(tmp_path / "weird.pt")
    with pytest.raises(sl.SteerlabError, match="no file"):
        from_steering_vectors(tmp_path / "missing.pt")


def test_imported_vector_steers_like_the_peer(tiny_llama):
    """steering-vectors adds the vector to the decoder block's output at every position: Add at resid_post."""
    g = torch.Generator().manual_seed(2)
    acts = {1: torch.randn(64, generator=g)}
    d = from_steering_vectors({"layer_activations": acts, "layer_type": "decoder_block"})
    hook = tiny_llama.hf_model.model.layers[1].register_forward_hook(
        lambda mod, args, out: (out[0] + acts[1], *out[1:]) if isinstance(out, tuple) else out + acts[1])
    try:
        ids = torch.tensor([tiny_llama.tokenizer("Some text")["input_ids"]])
        with torch.no_grad():
            want = tiny_llama.hf_model(input_ids=ids).logits[0, -1]
    finally:
        hook.remove()
    got = tiny_llama.logits(["Some text"], steering=sl.Add(d, site=d.meta["site"]), progress=False)[0]
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
