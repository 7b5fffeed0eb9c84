"""The report: files written, one self-contained HTML page, and it renders in headless Chromium."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import torch

import steerlab as sl
from steerlab.evaluate import Comparison, frontier

CHROMIUM = Path("/usr/bin/chromium")


def synthetic_comparison() -> Comparison:
    """A small comparison with made-up numbers (no model): two methods, three strengths each."""
    rows = [{"method": "baseline", "param": "none", "strength": 0.0, "sentiment": 0.2, "perplexity": 10.0,
             "kl": 0.0, "accuracy": 0.5, "repetition": 0.0, "distinct_1": 0.8, "distinct_2": 0.9, "probe": -1.0}]
    for method, param in (("add", "alpha"), ("selective", "angle_deg")):
        for k, s in enumerate((0.0, 1.0, 2.0)):
            rows.append({"method": method, "param": param, "strength": s, param: s,
                         "sentiment": 0.2 + 0.3 * k, "perplexity": 10.0 * (1 + k * k), "kl": 0.1 * k,
                         "accuracy": 0.5 - 0.1 * k, "repetition": 0.05 * k, "distinct_1": 0.8, "distinct_2": 0.9,
                         "probe": -1.0 + k})
    results = pd.DataFrame(rows)
    front = frontier(results[results["method"] != "baseline"], "sentiment", "perplexity")
    samples = pd.DataFrame([{"method": r["method"], "strength": r["strength"], "prompt": p,
                             "text": f"<b>{r['method']}</b> & {r['strength']} {p}"}
                            for r in rows for p in ("Tell me <about> it.", "Describe a park.")])
    sweep = pd.DataFrame({"layer": range(6), "probe_acc": [0.5, 0.6, 0.9, 1.0, 1.0, 0.9],
                          "diff_acc": [0.5, 0.5, 0.8, 1.0, 0.9, 0.9], "cohens_d": [0, 0.5, 2, 4, 3, 2],
                          "mu_pos": 0.0, "mu_neg": 0.0, "opposite_sign": True, "norm": 1.0})
    v = torch.ones(8)
    recipes = {("add", 0.0): None, ("add", 1.0): sl.Steering([sl.Add(v, 1.0, layers=[3])], {"method": "add"}),
               ("add", 2.0): sl.Steering([sl.Add(v, 2.0, layers=[3])], {"method": "add"}),
               ("selective", 0.0): None,
               ("selective", 1.0): sl.recipes.selective(v, torch.arange(8.0), 1.0, [2, 3]),
               ("selective", 2.0): sl.recipes.selective(v, torch.arange(8.0), 2.0, [2, 3])}
    methods = {m: {"param": p, "summary": f"{m} summary", "strengths": [0.0, 1.0, 2.0], "identity": 0.0,
                   "info": {"layers": [3] if m == "add" else [2, 3]}, "fit_seconds": 0.1}
               for m, p in (("add", "alpha"), ("selective", "angle_deg"))}
    data = {"dataset": {"name": "sentiment", "pairs": 20, "hash": "abc"}, "train": {"hash": "t1"},
            "test": {"hash": "t2"}, "train_pairs": 15, "test_pairs": 5, "selection_fit_pairs": 12,
            "selection_val_pairs": 3, "behaviour_prompts": {"n": 2, "hash": "p", "source": "neutral"},
            "kl_prompts": {"n": 2, "hash": "k"}, "task_items": {"n": 4}, "reference_text": {"hash": "r"},
            "overlap_behaviour_prompts_with_training_texts": 0}
    settings = {"model": "tiny", "dataset": "sentiment", "methods": ["add", "selective"], "behaviour": "sentiment",
                "behaviour_columns": ["sentiment", "probe"], "utility": "perplexity", "max_new_tokens": 8, "seed": 0,
                "higher_is_better": {"sentiment": True, "perplexity": False, "kl": False}}
    return Comparison(results, front, samples, sweep, methods, recipes, data, settings, {"total": 1.0},
                      ["a note"])


def test_summary_reports_the_frontier_and_the_budget_pick():
    summary = synthetic_comparison().summary().set_index("method")
    # perplexity 10, 20, 50 for strengths 0, 1, 2; the budget is 1.25 x 10 = 12.5 -> strength 0 only
    assert summary.loc["add", "frontier"] == "0: +0.200 @ 10; 1: +0.500 @ 20; 2: +0.800 @ 50"
    assert summary.loc["add", "best_strength"] == 2.0 and summary.loc["add", "budget_strength"] == 0.0


def test_write_report_writes_every_file_and_a_self_contained_page(tmp_path):
    paths = sl.report.write_report(synthetic_comparison(), tmp_path / "out", command="steerlab compare --x")
    for name in ("results", "frontier", "summary", "samples", "report", "figure_frontier", "figure_strength",
                 "figure_layers"):
        assert paths[name].is_file() and paths[name].stat().st_size > 0
    results = pd.read_csv(paths["results"])
    assert len(results) == 7 and {"method", "strength", "sentiment", "perplexity"} <= set(results.columns)
    assert len(pd.read_csv(paths["frontier"])) == 6      # every synthetic point is on its method's frontier
    assert len(list((tmp_path / "out" / "recipes").glob("*.steer"))) == 4
    loaded = sl.Steering.load(tmp_path / "out" / "recipes" / "add_2.steer")
    assert loaded.interventions[0].alpha == 2.0
    page = paths["report"].read_text()
    assert page.count("<img src='data:image/png;base64,") == 3
    assert not re.search(r"(src|href)=['\"]?(https?:|//)", page)            # nothing loaded from outside
    assert "&lt;b&gt;add&lt;/b&gt;" in page and "<b>add</b> &amp;" not in page   # generations are escaped
    assert "steerlab compare --x" in page and "15" in page and "a note" in page


def test_recipe_digest_is_stable_and_sensitive():
    a = sl.Steering([sl.Add(torch.ones(4), 1.0, layers=[1])])
    b = sl.Steering([sl.Add(torch.ones(4), 1.0, layers=[1])])
    c = sl.Steering([sl.Add(torch.ones(4), 1.5, layers=[1])])
    assert sl.report.recipe_digest(a) == sl.report.recipe_digest(b) != sl.report.recipe_digest(c)


def render_in_chromium(page: Path, workdir: Path) -> tuple[str, list[str]]:
    """Load ``page`` in headless Chromium; return the DOM after load and the page's console lines.

    The page's own script marks ``<body>`` with how many images decoded; console messages (errors
    included) come through Chromium's log on stderr as lines with ``CONSOLE``.
    """
    args = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={workdir / 'chromium-profile'}", "--enable-logging=stderr", "--v=0",
            "--virtual-time-budget=5000", "--dump-dom", page.resolve().as_uri()]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    console = [line for line in done.stderr.splitlines() if "CONSOLE" in line]
    return done.stdout, console


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium package (/usr/bin/chromium)")
def test_report_renders_in_headless_chromium_without_console_errors(tmp_path):
    paths = sl.report.write_report(synthetic_comparison(), tmp_path / "out")
    dom, console = render_in_chromium(paths["report"], tmp_path)
    assert console == [], console
    match = re.search(r'<body[^>]*data-images="(\d+)/(\d+)"', dom)
    assert match, "the page's check script did not run"
    assert match.group(1) == match.group(2) == "3"
    assert 'data-errors="0"' in dom


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium package (/usr/bin/chromium)")
def test_the_chromium_check_catches_a_broken_page(tmp_path):
    bad = tmp_path / "bad.html"
    good = sl.report.page("t", [("s", ("<img src='data:image/png;base64,AAAA' alt='x'>"
                                       "<script>nosuchfunction()</script>"))])
    bad.write_text(good)
    dom, console = render_in_chromium(bad, tmp_path)
    assert any("nosuchfunction" in line for line in console)
    assert re.search(r'data-images="0/1"', dom)
