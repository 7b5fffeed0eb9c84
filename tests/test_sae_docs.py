"""docs/sae.md's Python block runs as written (on the embedded model, in a temporary folder)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest


@pytest.mark.slow
def test_docs_python_block_runs(tmp_path, monkeypatch, smollm):
    import steerlab as sl

    text = (Path(__file__).parents[1] / "docs" / "sae.md").read_text()
    block = re.search(r"## From Python\s+```python\n(.*?)```", text, re.DOTALL).group(1)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sl, "load", lambda *a, **k: smollm)
    scope: dict = {}
    exec(compile(block, "docs/sae.md", "exec"), scope)  # noqa: S102 -- running the docs is the test
    assert (tmp_path / "l15.sae" / "cfg.json").is_file()
    assert scope["sae"].site == "layers.15.resid_post" and len(scope["out"].texts) == 2
