"""llama.cpp control vectors: file format (read back with the gguf package), repeng parity, layer numbering."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch

import steerlab as sl
from steerlab.directions.direction import Direction
from steerlab.edit import read_control_vector, write_control_vector

FIXTURES = Path(__file__).parent / "fixtures"


def fixture_vectors():
    spec = importlib.util.spec_from_file_location("make_peer_fixtures", FIXTURES / "make_peer_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.fixture_vectors()


def fields(path) -> dict:
    """Every key/value of a GGUF file, decoded by hand from the gguf package's reader."""
    reader = gguf.GGUFReader(str(path))
    out = {}
    for name, field in reader.fields.items():
        if name.startswith("GGUF."):
            continue
        value = field.parts[field.data[0]]
        out[name] = bytes(value).decode() if field.types[0] == gguf.GGUFValueType.STRING else int(value[0])
    return out


def tensors(path) -> dict:
    reader = gguf.GGUFReader(str(path))
    return {t.name: (t.tensor_type, tuple(int(x) for x in t.shape), np.array(t.data)) for t in reader.tensors}


def test_file_format_read_back_with_gguf(tmp_path):
    d = Direction({1: torch.arange(6.0), 3: -torch.ones(6)}, meta={"model": {"family": "llama", "n_layers": 4}})
    path = d.to_gguf(tmp_path / "v.gguf", alpha=2.0)
    assert fields(path) == {"general.architecture": "controlvector", "controlvector.model_hint": "llama",
                            "controlvector.layer_count": 2}
    found = tensors(path)
    assert list(found) == ["direction.1", "direction.3"]
    for name, layer in (("direction.1", 1), ("direction.3", 3)):
        kind, shape, data = found[name]
        assert kind == gguf.GGMLQuantizationType.F32 and shape == (6,)
        np.testing.assert_array_equal(data, 2.0 * d[layer].numpy())


def test_round_trip(tmp_path):
    g = torch.Generator().manual_seed(3)
    d = Direction({layer: torch.randn(16, generator=g) for layer in (2, 4, 7)})
    back = Direction.from_gguf(d.to_gguf(tmp_path / "r.gguf", layers=[2, 7], alpha=-0.5))
    assert back.layers == [2, 7] and back.meta["site"] == "resid_post"
    for layer in (2, 7):
        torch.testing.assert_close(back[layer], -0.5 * d[layer], rtol=0, atol=0)


def test_same_file_as_repeng_exporter(tmp_path):
    """The committed fixture was written by repeng's ControlVector.export_gguf (see make_peer_fixtures.py)."""
    vectors = fixture_vectors()
    ours = write_control_vector(tmp_path / "ours.gguf", {k: torch.from_numpy(v) for k, v in vectors.items()}, "llama")
    theirs = FIXTURES / "repeng_controlvector.gguf"
    assert fields(ours) == fields(theirs)
    mine, ref = tensors(ours), tensors(theirs)
    assert list(mine) == list(ref) == [f"direction.{k}" for k in vectors]
    for name in ref:
        assert mine[name][:2] == ref[name][:2]
        np.testing.assert_array_equal(mine[name][2], ref[name][2])
    assert ours.read_bytes() == theirs.read_bytes()
    read = Direction.from_gguf(theirs)
    assert read.layers == sorted(vectors) and read.meta["model_hint"] == "llama"
    for layer, v in vectors.items():
        np.testing.assert_array_equal(read[layer].numpy(), v)


def test_numbering_matches_llama_cpp(tiny_llama, tmp_path):
    """Emulate llama.cpp by hand: data for direction.N at offset (N-1)*n_embd, added to the output of
    graph layer il = N for il in 1..n_layer-1; compare with steerlab's Add at layers.N.resid_post."""
    g = torch.Generator().manual_seed(5)
    d = Direction({1: torch.randn(64, generator=g), 2: torch.randn(64, generator=g)})
    path = d.to_gguf(tmp_path / "cv.gguf", alpha=1.5)
    strength = 0.8
    reader = gguf.GGUFReader(str(path))
    n_embd, n_layer = 64, tiny_llama.n_layers
    data = np.zeros(0, dtype=np.float32)
    for t in reader.tensors:
        index = int(t.name.split(".")[1])
        assert index != 0
        data = np.concatenate([data, np.zeros(max(0, n_embd * index - data.size), dtype=np.float32)])
        data[n_embd * (index - 1):n_embd * index] += np.asarray(t.data) * strength
    hooks = []
    for il in range(1, n_layer):
        off = n_embd * (il - 1)
        if off + n_embd <= data.size:
            vec = torch.from_numpy(data[off:off + n_embd].copy())
            hooks.append(tiny_llama.hf_model.model.layers[il].register_forward_hook(
                lambda mod, args, out, vec=vec: (out[0] + vec, *out[1:]) if isinstance(out, tuple) else out + vec))
    try:
        ids = torch.tensor([tiny_llama.tokenizer("Hello world")["input_ids"]])
        with torch.no_grad():
            emulated = tiny_llama.hf_model(input_ids=ids).logits[0, -1]
    finally:
        for h in hooks:
            h.remove()
    steered = tiny_llama.logits(["Hello world"], steering=sl.Add(Direction.from_gguf(path), alpha=strength),
                                progress=False)[0]
    plain = tiny_llama.logits(["Hello world"], progress=False)[0]
    torch.testing.assert_close(steered, emulated, atol=1e-4, rtol=1e-4)
    assert (steered - plain).abs().max() > 1e-2


def test_layer_zero_and_bad_files(tmp_path):
    d = Direction({0: torch.ones(4), 1: torch.ones(4)})
    with pytest.warns(UserWarning, match="layer 0"):
        path = d.to_gguf(tmp_path / "a.gguf")
    assert read_control_vector(path).vectors.keys() == {1}
    with pytest.raises(sl.SteerlabError, match="direction.0"):
        d.to_gguf(tmp_path / "b.gguf", layers=[0, 1])
    with pytest.raises(sl.SteerlabError, match="not in this direction"):
        d.to_gguf(tmp_path / "b.gguf", layers=[5])
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf file")
    with pytest.raises(sl.SteerlabError, match="not a readable GGUF"):
        Direction.from_gguf(tmp_path / "junk.gguf")
    writer = gguf.GGUFWriter(str(tmp_path / "model.gguf"), "llama")
    writer.add_tensor("token_embd.weight", np.zeros((2, 4), dtype=np.float32))
    writer.write_header_to_file(), writer.write_kv_data_to_file(), writer.write_tensors_to_file(), writer.close()
    with pytest.raises(sl.SteerlabError, match="not a control vector"):
        Direction.from_gguf(tmp_path / "model.gguf")
    with pytest.raises(sl.SteerlabError, match="no GGUF file"):
        Direction.from_gguf(tmp_path / "missing.gguf")
