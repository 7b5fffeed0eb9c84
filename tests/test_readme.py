"""The README's quickstart runs as written (on the embedded model)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).parents[1] / "README.md"


def test_quickstart_runs(tmp_path, monkeypatch, smollm):
    import steerlab as sl

    block = re.search(r"## Quickstart\s+```python\n(.*?)```", README.read_text(), re.S).group(1)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sl, "load", lambda *a, **k: smollm)  # the same model, already loaded
    scope: dict = {}
    exec(compile(block, "README quickstart", "exec"), scope)
    assert scope["acts"]["layers.12.resid_post"].shape == (len(scope["train"]), 576)
    assert len(scope["rows"].texts) == 3 and all(isinstance(t, str) for t in scope["rows"].texts)
    assert (tmp_path / "happy.steer" / "recipe.json").is_file()
