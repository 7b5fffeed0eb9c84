"""Capture: in memory and streamed to disk (atomic shards, resumable, memory-mapped reading)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import steerlab as sl
from steerlab.activations import DiskActivations

TEXTS = [f"text number {i} " + "word " * (i % 7) for i in range(23)]


def _reference_last(model, texts, layer):
    out = []
    for t in texts:
        ids = model.tokenizer(t, return_tensors="pt").input_ids
        with torch.no_grad():
            out.append(model.hf_model(ids, output_hidden_states=True).hidden_states[layer + 1][0, -1])
    return torch.stack(out)


def test_last_mean_and_all_positions(tiny_llama):
    m = tiny_llama
    acts = m.capture(TEXTS, sites="resid_post", layers=[0, 1], positions="last", batch_size=4)
    assert torch.allclose(acts["layers.1.resid_post"], _reference_last(m, TEXTS, 1), atol=1e-5)
    full = m.capture(TEXTS, sites="resid_post", layers=[1], positions="all", batch_size=5)["layers.1.resid_post"]
    mean = m.capture(TEXTS, sites="resid_post", layers=[1], positions="mean", batch_size=3)["layers.1.resid_post"]
    for i, t in enumerate(TEXTS):
        assert full[i].shape[0] == len(m.tokenizer(t).input_ids)
        assert torch.allclose(full[i][-1], acts["layers.1.resid_post"][i], atol=1e-5)
        assert torch.allclose(mean[i], full[i].mean(0), atol=1e-5)
    assert acts.stack("resid_post").shape == (len(TEXTS), 2, m.d_model)


def test_the_forward_pass_stops_after_the_deepest_site(tiny_llama):
    m = tiny_llama
    calls = []
    handles = [b.register_forward_hook(lambda mod, a, o, i=i: calls.append(i)) for i, b in enumerate(m.bound.blocks)]
    head = m.hf_model.get_output_embeddings().register_forward_hook(lambda *a: calls.append("head"))
    try:
        m.capture(TEXTS[:4], sites="layers.0.resid_post", batch_size=4)
    finally:
        for h in handles + [head]:
            h.remove()
    assert calls == [0]


def test_streaming_to_disk_equals_memory(tiny_llama, tmp_path):
    m = tiny_llama
    mem = m.capture(TEXTS, sites=["resid_post", "layers.2.attn.heads"], positions="last", batch_size=4)
    disk = m.capture(TEXTS, sites=["resid_post", "layers.2.attn.heads"], positions="last", batch_size=4,
                     out=tmp_path / "acts")
    assert isinstance(disk, DiskActivations)
    manifest = json.loads((tmp_path / "acts" / "manifest.json").read_text())
    assert manifest["complete"] and len(manifest["shards"]) == 6
    for name in mem.sites:
        assert torch.equal(disk[name], mem[name])
    reopened = sl.activations.open_activations(tmp_path / "acts")
    assert torch.equal(reopened["layers.0.resid_post"], mem["layers.0.resid_post"])
    everything = m.capture(TEXTS, sites="layers.1.resid_post", positions="all", batch_size=4, out=tmp_path / "all")
    again = m.capture(TEXTS, sites="layers.1.resid_post", positions="all", batch_size=4)
    for a, b in zip(everything["layers.1.resid_post"], again["layers.1.resid_post"]):
        assert torch.equal(a, b)


def test_shards_are_memory_mapped(tiny_llama, tmp_path):
    from steerlab.activations.store import mmap_safetensors

    tiny_llama.capture(TEXTS[:4], sites="layers.0.resid_post", out=tmp_path / "a")
    shard = next((tmp_path / "a").glob("shard-*.safetensors"))
    tensors = mmap_safetensors(shard)
    from safetensors.torch import load_file

    ref = load_file(str(shard))
    assert tensors.keys() == ref.keys()
    for k in ref:
        assert torch.equal(tensors[k], ref[k])


CRASHY = r"""
import sys, time, torch
sys.path[:0] = [sys.argv[1], sys.argv[2]]
from tiny import tiny_model
m = tiny_model("llama")
texts = [f"text number {i} " + "word " * (i % 7) for i in range(23)]
for b in m.bound.blocks[:1]:
    b.register_forward_hook(lambda *a: time.sleep(float(sys.argv[4])))
m.capture(texts, sites="resid_post", batch_size=2, out=sys.argv[3])
"""


def test_a_killed_capture_resumes_without_recomputing(tiny_llama, tmp_path):
    out = tmp_path / "acts"
    src, tests = str(Path(sl.__file__).parents[1]), str(Path(__file__).parent)
    proc = subprocess.Popen([sys.executable, "-c", CRASHY, src, tests, str(out), "0.3"])
    manifest = out / "manifest.json"
    deadline = time.time() + 60
    while time.time() < deadline:
        if manifest.exists() and len(json.loads(manifest.read_text())["shards"]) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(json.loads(manifest.read_text())["shards"])
    assert 3 <= done < 12, done
    calls = []
    handle = tiny_llama.bound.blocks[0].register_forward_hook(lambda *a: calls.append(1))
    try:
        resumed = tiny_llama.capture(TEXTS, sites="resid_post", batch_size=2, out=out)
    finally:
        handle.remove()
    assert len(calls) == 12 - done
    fresh = tiny_llama.capture(TEXTS, sites="resid_post", batch_size=2)
    for name in fresh.sites:
        assert torch.equal(resumed[name], fresh[name])
    assert not any(p.name.endswith(".tmp") for p in out.iterdir())


def test_a_different_capture_into_the_same_folder_is_refused_unless_overwrite(tiny_llama, tmp_path):
    tiny_llama.capture(TEXTS, sites="layers.0.resid_post", batch_size=4, out=tmp_path / "a")
    with pytest.raises(sl.SteerlabError, match="another capture .*n_texts.*texts.*overwrite=True"):
        tiny_llama.capture(TEXTS[:5], sites="layers.0.resid_post", batch_size=4, out=tmp_path / "a")
    assert len(list((tmp_path / "a").glob("shard-*"))) == 6  # the first capture is untouched
    other = tiny_llama.capture(TEXTS[:5], sites="layers.0.resid_post", batch_size=4, out=tmp_path / "a",
                               overwrite=True)
    assert len(other) == 5
    assert len(list((tmp_path / "a").glob("shard-*"))) == 2


def test_capture_under_steering_sees_the_steered_values(tiny_llama):
    v = torch.randn(tiny_llama.d_model)
    plain = tiny_llama.capture(TEXTS, sites="layers.1.resid_post")
    steered = tiny_llama.capture(TEXTS, sites="layers.1.resid_post", steering=sl.Add(v, layers=[1]))
    assert torch.allclose(steered["layers.1.resid_post"], plain["layers.1.resid_post"] + v, atol=1e-5)


@pytest.mark.parametrize("kwargs, match", [
    ({"sites": "resid_middle"}, "unknown site"),
    ({"sites": "layers.9.resid_post"}, "out of range"),
    ({"layers": [5]}, "out of range"),
    ({"positions": "first"}, "positions"),
    ({"batch_size": 0}, "batch_size"),
])
def test_bad_capture_arguments(tiny_llama, kwargs, match):
    with pytest.raises(sl.SteerlabError, match=match):
        tiny_llama.capture(TEXTS, **kwargs)


def test_empty_texts_are_refused(tiny_llama):
    with pytest.raises(sl.SteerlabError, match="empty"):
        tiny_llama.capture([])
    with pytest.raises(sl.SteerlabError, match="not captured"):
        tiny_llama.capture(TEXTS[:2], sites="layers.0.resid_post")["layers.1.resid_post"]
