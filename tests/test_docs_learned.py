"""docs/learned.md: every Python block runs as written (on the embedded model, loaded once)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).parents[1] / "docs" / "learned.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.DOTALL)


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_docs_python_block_runs(index, tmp_path, monkeypatch, smollm):
    import steerlab as sl

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sl, "load", lambda *a, **k: smollm)  # the same model, already loaded
    exec(compile(BLOCKS[index], f"docs/learned.md block {index}", "exec"), {})  # noqa: S102 -- the docs are the test


def test_every_section_has_a_python_block():
    assert len(BLOCKS) == 3
