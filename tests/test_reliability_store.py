"""The capture store trusts nothing it reads: bare shard names, checked sizes, rows and checksums,
and a resume key that refuses to mix models, precisions or settings."""

from __future__ import annotations

import json

import pytest
import torch

from steerlab.activations import DiskActivations, ShardWriter
from steerlab.errors import DataError, SteerlabError
from steerlab.models.load import weights_fingerprint
from tiny import tiny_model

TEXTS = [f"text {i} " + "word " * (i % 5) for i in range(10)]


def _capture(model, out, **kw):
    return model.capture(TEXTS, sites="layers.0.resid_post", batch_size=3, out=out, **kw)


def _manifest(out):
    return json.loads((out / "manifest.json").read_text())


def _write_manifest(out, doc):
    (out / "manifest.json").write_text(json.dumps(doc))


@pytest.mark.parametrize("evil", ["../victim/x.safetensors", "/ABS/victim.safetensors", "sub/shard-000000.safetensors",
                                  "..", "", 7, None])
def test_a_planted_traversal_manifest_deletes_and_reads_nothing_outside(tiny_llama, tmp_path, evil):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "x.safetensors").write_bytes(b"precious")
    (victim / "victim.safetensors").write_bytes(b"precious too")
    out = tmp_path / "acts"
    _capture(tiny_llama, out)
    doc = _manifest(out)
    doc["shards"][0]["file"] = str(evil).replace("/ABS", str(tmp_path)) if isinstance(evil, str) else evil
    _write_manifest(out, doc)
    with pytest.raises(DataError, match="shard"):  # reading: refused, nothing opened outside
        DiskActivations(out)
    doc["complete"] = False
    _write_manifest(out, doc)
    resumed = _capture(tiny_llama, out)  # resuming: the bad entry is recomputed, nothing outside removed
    assert (victim / "x.safetensors").read_bytes() == b"precious"
    assert (victim / "victim.safetensors").read_bytes() == b"precious too"
    assert all(s["file"].startswith("shard-") for s in _manifest(out)["shards"])
    fresh = tiny_llama.capture(TEXTS, sites="layers.0.resid_post", batch_size=3)
    assert torch.equal(resumed["layers.0.resid_post"], fresh["layers.0.resid_post"])


def test_other_weights_dtype_or_settings_refuse_to_append(tiny_llama, tmp_path):
    out = tmp_path / "acts"
    _capture(tiny_llama, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    other = tiny_model("llama", seed=1)  # same shape, other weights (a "fine-tune")
    assert other.fingerprint["shape_hash"] == tiny_llama.fingerprint["shape_hash"]
    with pytest.raises(SteerlabError, match="different weights"):
        _capture(other, out)
    half = tiny_model("llama")
    half.hf_model.to(torch.bfloat16)
    with pytest.raises(SteerlabError, match="different dtype, weights"):
        _capture(half, out)
    with pytest.raises(SteerlabError, match="different chat"):
        _capture(tiny_llama, out, chat=True)
    with pytest.raises(SteerlabError, match="different steering"):
        _capture(tiny_llama, out, steering=__import__("steerlab").Add(torch.ones(64), alpha=1.0, layers=[0]))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing appended or removed
    again = _capture(other, out, overwrite=True)  # --force starts over
    assert torch.equal(again["layers.0.resid_post"],
                       other.capture(TEXTS, sites="layers.0.resid_post", batch_size=3)["layers.0.resid_post"])


def test_weights_fingerprint_sees_one_changed_tensor_and_the_dtype():
    a, b = tiny_model("llama"), tiny_model("llama")
    assert weights_fingerprint(a.hf_model) == weights_fingerprint(b.hf_model)
    with torch.no_grad():
        b.hf_model.model.layers[1].mlp.down_proj.weight.mul_(1.01)
    assert weights_fingerprint(a.hf_model) != weights_fingerprint(b.hf_model)
    a.hf_model.to(torch.float16)
    assert weights_fingerprint(a.hf_model) != weights_fingerprint(tiny_model("llama").hf_model)


@pytest.mark.parametrize("damage", ["empty", "truncate", "flip", "delete"])
def test_a_bad_shard_is_reported_on_read_and_recomputed_on_resume(tiny_llama, tmp_path, capsys, damage):
    out = tmp_path / "acts"
    fresh = _capture(tiny_llama, out)["layers.0.resid_post"].clone()
    shard = out / _manifest(out)["shards"][1]["file"]
    data = shard.read_bytes()
    if damage == "empty":
        shard.write_bytes(b"")
    elif damage == "truncate":
        shard.write_bytes(data[: len(data) - 5])
    elif damage == "flip":  # same size, one value changed: only the checksum sees it
        shard.write_bytes(data[:-1] + bytes([data[-1] ^ 0x40]))
    else:
        shard.unlink()
    with pytest.raises(DataError, match=shard.name):
        acts = DiskActivations(out)
        acts.verify()
    doc = _manifest(out)
    doc["complete"] = False
    _write_manifest(out, doc)
    capsys.readouterr()
    calls = []
    handle = tiny_llama.bound.blocks[0].register_forward_hook(lambda *a: calls.append(1))
    try:
        resumed = _capture(tiny_llama, out)
    finally:
        handle.remove()
    assert len(calls) == 1  # only the bad shard was recomputed
    assert "resuming: 3 of 4 shards done" in capsys.readouterr().err
    assert torch.equal(resumed["layers.0.resid_post"], fresh)
    resumed.verify()


def test_a_manifest_with_missing_or_duplicated_rows_is_refused(tiny_llama, tmp_path):
    out = tmp_path / "acts"
    _capture(tiny_llama, out)
    doc = _manifest(out)
    doc["shards"][1] = dict(doc["shards"][0])
    _write_manifest(out, doc)
    with pytest.raises(DataError, match="exactly once"):
        DiskActivations(out)["layers.0.resid_post"]


@pytest.mark.parametrize("field,value", [("sites", "x"), ("positions", "middle"), ("n_texts", -1), ("shards", {}),
                                         ("n_texts", 11), ("format", "other/1")])
def test_a_hand_edited_manifest_gives_one_clear_error(tiny_llama, tmp_path, field, value):
    out = tmp_path / "acts"
    _capture(tiny_llama, out)
    doc = _manifest(out)
    doc[field] = value
    _write_manifest(out, doc)
    with pytest.raises(DataError, match="manifest|activations"):
        DiskActivations(out)


def test_the_writer_never_removes_files_it_did_not_name(tmp_path):
    out = tmp_path / "acts"
    w = ShardWriter(out, sites=["a"], positions="last", n_texts=1, key={"k": 1})
    w.write(0, [0], {"a": torch.ones(1, 2)})
    (out / "notes.txt").write_text("mine")
    ShardWriter(out, sites=["a"], positions="last", n_texts=1, key={"k": 2}, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"
    assert not list(out.glob("shard-*"))
