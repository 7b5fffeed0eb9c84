"""The README's quickstart runs as written (on the embedded model)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).parents[1] / "README.md"


def test_quickstart_runs(tmp_path, monkeypatch, smollm):
    import steerlab as sl

    block = re.search(r"## Quickstart\s+```python\n(.*?)```", README.read_text(), re.DOTALL).group(1)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sl, "load", lambda *a, **k: smollm)  # the same model, already loaded
    scope: dict = {}
    exec(compile(block, "README quickstart", "exec"), scope)  # noqa: S102 -- running the README is the test
    assert scope["acts"]["layers.12.resid_post"].shape == (len(scope["train"]), 576)
    assert len(scope["rows"].texts) == 3 and all(isinstance(t, str) for t in scope["rows"].texts)
    assert (tmp_path / "happy.steer" / "recipe.json").is_file()


def test_bake_snippet_runs_after_quickstart(tmp_path, monkeypatch, smollm):
    """The README's bake block continues the quickstart: it bakes, saves and exports for real."""
    import steerlab as sl

    text = README.read_text()
    quick = re.search(r"## Quickstart\s+```python\n(.*?)```", text, re.DOTALL).group(1)
    bake = re.search(r"## Bake and ship\s+```python\n(.*?)```", text, re.DOTALL).group(1)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sl, "load", lambda *a, **k: smollm)
    scope: dict = {}
    exec(compile(quick, "README quickstart", "exec"), scope)  # noqa: S102 -- running the README is the test
    exec(compile(bake, "README bake", "exec"), scope)  # noqa: S102
    assert (tmp_path / "smollm2-happy" / "config.json").is_file()
    back = sl.Direction.from_gguf(tmp_path / "happy.gguf")
    layer = scope["layers"][0]
    torch = __import__("torch")
    torch.testing.assert_close(back[layer], scope["happy"][layer] * 0.75, rtol=1e-5, atol=1e-6)
