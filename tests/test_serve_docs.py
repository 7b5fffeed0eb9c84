"""docs/serve.md's Python examples run as written against a real server (tiny model, same names)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("openai")

import steerlab as sl
from steerlab.serve import Limits, Registry, start
from tiny import tiny_model

DOC = Path(__file__).parents[1] / "docs" / "serve.md"


def test_examples_run_against_a_server(tmp_path, monkeypatch, capsys):
    section = re.search(r"## Examples\n(.*?)\n## ", DOC.read_text(), re.DOTALL).group(1)
    blocks = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    assert len(blocks) >= 3
    model = tiny_model("llama")
    g = torch.Generator().manual_seed(0)
    refusal = sl.Direction({1: torch.randn(64, generator=g), 2: torch.randn(64, generator=g)})
    happy = sl.Steering([sl.Add(torch.randn(64, generator=g), alpha=3.0, layers=[1])])
    monkeypatch.chdir(tmp_path)
    refusal.save("refusal.direction")
    with start(model, Registry(model, recipes={"happy": happy}, directions={"refusal": refusal}),
               limits=Limits(max_tokens=64)) as server:
        scope: dict = {}
        for block in blocks:
            code = block.replace("http://127.0.0.1:8000/v1", server.url)
            exec(compile(code, "docs/serve.md", "exec"), scope)  # noqa: S102 -- running the docs is the test
    out = capsys.readouterr().out
    assert "steered:" in out and "unsteered:" in out and "scores:" in out
    assert len(scope["choice"].model_extra["steerlab"]["reads"]["refusal"]) > 0
    assert scope["response"].choices[0].text is not None
