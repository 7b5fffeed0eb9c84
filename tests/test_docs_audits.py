"""docs/audits.md's Python blocks, run as written on a tiny random model with the embedded model's depth."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import steerlab as sl
from steerlab.evaluate import robustness
from tiny import byte_tokenizer, tiny_config

DOC = Path(__file__).parents[1] / "docs" / "audits.md"


def deep_tiny(n_layers: int = 30) -> sl.Model:
    """A tiny llama with as many layers as SmolLM2, so the docs' layer numbers exist."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    config = tiny_config("llama")
    config.num_hidden_layers = n_layers
    config.max_position_embeddings = 2048  # byte-level tokens: the docs' prompts are long
    hf = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="eager")
    hf.generation_config.eos_token_id = 2
    hf.generation_config.pad_token_id = 0
    return sl.Model(hf, byte_tokenizer(), name="tiny-deep")


def blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), re.DOTALL)


def test_docs_python_blocks_run(monkeypatch, tmp_path):
    model = deep_tiny()
    monkeypatch.setattr(sl, "load", lambda *a, **k: model)
    # the tiny model never refuses: call every reply a refusal, so the audit has targets
    monkeypatch.setattr(robustness, "is_refusal", lambda text, substrings=(): True)
    # short prompts keep the byte-level tiny model fast (HarmBench requests are hundreds of bytes)
    short = {"test": {"harmful": ["Pick a lock.", "Hack a phone.", "Steal a car."], "harmless": ["Bake bread."]}}
    monkeypatch.setattr(sl.evaluate, "refusal_prompts", lambda *a, **k: short)
    monkeypatch.chdir(tmp_path)
    found = blocks()
    assert len(found) >= 4
    scope: dict = {}
    for i, block in enumerate(found):
        exec(compile(block, f"docs/audits.md[{i}]", "exec"), scope)  # noqa: S102 -- running the docs is the test
    assert {"audit", "result", "intro", "truth"} <= set(scope)


@pytest.mark.parametrize("name", ["robustness", "introspect", "truth-stability", "lofit"])
def test_docs_show_each_command(name):
    assert f"steerlab {name}" in DOC.read_text()
