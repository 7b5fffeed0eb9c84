"""Every ```python block in README.md and docs/*.md runs as written.

Pages are discovered, so a new page's blocks are run without touching this file. The blocks of one
page run in order, in one scope, in a fresh folder, with ``sl.load("smollm2")`` returning the
embedded model the session already loaded. A few blocks are run by another test (on a tiny model or
against a live server): ``ELSEWHERE`` names each one and that test, and ``test_the_map_is_current``
fails when a block or a test named there is gone. ``SETUP`` writes the input files a page assumes
the reader has; ``NEEDS`` lists the blocks that need what this machine lacks.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import steerlab as sl

ROOT = Path(__file__).parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)

#: (page, a text only that block holds) -> the test that runs it
ELSEWHERE = {
    ("README.md", 'steer.save("happy.steer")'): "tests/test_readme.py::test_quickstart_runs",
    ("README.md", "sl.edit.bake(model, steer)"): "tests/test_readme.py::test_bake_snippet_runs_after_quickstart",
    ("docs/reasoning.md", "traces = sl.reasoning.sample(model, prompts, segment=16"):
        "tests/test_reasoning_audit.py::test_docs_block_runs",
    ("docs/reasoning.md", "sl.reasoning.lt_stopper("): "tests/test_reasoning_audit.py::test_docs_block_runs",
    ("docs/reasoning.md", "sl.evaluate.efficiency_sweep("): "tests/test_reasoning_audit.py::test_docs_block_runs",
    ("docs/audits.md", "latent_robustness"): "tests/test_docs_audits.py::test_docs_python_blocks_run",
    ("docs/audits.md", "arithmetic_items(16, seed=1000)"): "tests/test_docs_audits.py::test_docs_python_blocks_run",
    ("docs/audits.md", "from steerlab.analysis.introspection import"):
        "tests/test_docs_audits.py::test_docs_python_blocks_run",
    ("docs/audits.md", "from steerlab.analysis.truth import"): "tests/test_docs_audits.py::test_docs_python_blocks_run",
    ("docs/learned.md", "sl.recipes.train_controller("): "tests/test_docs_learned.py::test_docs_python_block_runs",
    ("docs/learned.md", "sl.directions.grains("): "tests/test_docs_learned.py::test_docs_python_block_runs",
    ("docs/learned.md", "rotate = sl.Rotate(happy[15]"): "tests/test_docs_learned.py::test_docs_python_block_runs",
    ("docs/sae.md", "sl.sae.train_sae("): "tests/test_sae_docs.py::test_docs_python_block_runs",
    ("docs/transfer.md", "from steerlab.directions import transfer"):
        "tests/test_transfer.py::test_docs_python_block_runs_as_written",
    ("docs/refusal.md", "select_refusal_direction("): "tests/test_refusal.py::test_docs_python_block_runs",
    ("docs/serve.md", "from openai import OpenAI"): "tests/test_serve_docs.py::test_examples_run_against_a_server",
    ("docs/serve.md", "stream = client.chat"): "tests/test_serve_docs.py::test_examples_run_against_a_server",
    ("docs/serve.md", "tensor_b64(vector[layer])"): "tests/test_serve_docs.py::test_examples_run_against_a_server",
    # needs vLLM: runs in `make test-vllm`s venv
    ("docs/scale.md", "from vllm import"): "tests/engines/test_vllm_plugin.py::test_scale_doc_example_runs",
}

#: (page, a text only that block holds) -> (module it needs, why); the block runs where the module imports
NEEDS = {
    ("docs/serve.md", "Registry(model, recipes="): ("fastapi", "starts the HTTP server (pip install 'steerlab[serve]')"),
}

#: what stands in for the environment in a block: (page, text) -> replacement
REWRITES = {
    ("docs/serve.md", "port=8000"): "port=0",  # a free port: tests run side by side
}


def _serve_inputs(model) -> None:
    """serve.md's first block serves the recipe and direction the README's quickstart saved."""
    g = torch.Generator().manual_seed(0)
    direction = sl.Direction({layer: torch.randn(model.d_model, generator=g) for layer in (10, 12)})
    direction.save("refusal.direction")
    sl.Steering([sl.Add(direction, alpha=0.75, layers=[10, 12])]).save("happy.steer")


def _imported_vectors(model) -> None:
    """bake.md's import block reads a repeng file (a llama.cpp control vector, written here by
    steerlab in the same format) and a steering-vectors ``.pt`` (here the plain ``{layer: tensor}``
    form it also accepts)."""
    g = torch.Generator().manual_seed(1)
    vectors = {layer: torch.randn(model.d_model, generator=g) for layer in (8, 9, 10)}
    sl.Direction(vectors).to_gguf("vector.gguf")
    torch.save(vectors, "sv.pt")


#: page -> writes the files the page's blocks read but do not make (in the page's folder)
SETUP: dict[str, Callable] = {"docs/serve.md": _serve_inputs, "docs/bake.md": _imported_vectors}


def _name(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


def blocks(page: Path) -> list[str]:
    return BLOCK.findall(page.read_text(encoding="utf-8"))


def _marked(table: dict, page: str, block: str):
    return next((value for (name, text), value in table.items() if name == page and text in block), None)


def test_the_map_is_current():
    """Each listed block still exists (exactly once) and each test named as running it exists."""
    pages = {_name(p): blocks(p) for p in PAGES}
    for page, text in [*ELSEWHERE, *NEEDS, *REWRITES]:
        found = [b for b in pages.get(page, []) if text in b]
        assert len(found) == 1, f"{page}: {len(found)} python blocks hold {text!r}; update tests/test_docs_blocks.py"
    for test in set(ELSEWHERE.values()):
        file, name = test.split("::")
        source = (ROOT / file).read_text(encoding="utf-8")
        assert re.search(rf"^def {name}\(", source, re.MULTILINE), f"{test} is gone"
    for (page, _), test in ELSEWHERE.items():
        file = test.split("::")[0]
        assert Path(page).name in (ROOT / file).read_text(encoding="utf-8"), f"{file} does not read {page}"
    assert sum(len(b) for b in pages.values()) > len(ELSEWHERE) + len(NEEDS)  # most run here


def _pages_with_blocks() -> list:
    out = []
    for page in PAGES:
        name = _name(page)
        if any(_marked(ELSEWHERE, name, b) is None for b in blocks(page)):
            out.append(pytest.param(page, id=name))
    return out


@pytest.mark.parametrize("page", _pages_with_blocks())
def test_page_blocks_run_as_written(page, smollm, tmp_path, monkeypatch):
    name = _name(page)
    real_load = sl.load

    def load(source: str = "smollm2", *args, **kwargs):
        return smollm if source == "smollm2" and not args and not kwargs else real_load(source, *args, **kwargs)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setattr(sl, "load", load)
    if name in SETUP:
        SETUP[name](smollm)
    scope: dict = {}
    ran = 0
    for number, block in enumerate(blocks(page)):
        if _marked(ELSEWHERE, name, block) is not None:
            continue
        need = _marked(NEEDS, name, block)
        if need is not None:
            try:
                __import__(need[0])
            except ImportError:
                continue  # listed in NEEDS with the reason; runs where the module is installed
        for (where, text), new in REWRITES.items():
            if where == name:
                block = block.replace(text, new)
        exec(compile(block, f"{name} python block {number}", "exec"), scope)  # noqa: S102 -- running the docs is the test
        ran += 1
    if ran == 0:
        pytest.skip(f"{name}: every block needs a module listed in NEEDS ({'; '.join(v[1] for v in NEEDS.values())})")
    _close_figures()


def _close_figures() -> None:
    import sys

    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close("all")

