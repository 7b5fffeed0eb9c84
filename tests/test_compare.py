"""End to end on the embedded model with a tiny grid: every method, held-out splits, the report, the CLI."""

from __future__ import annotations

import pandas as pd
import pytest
from typer.testing import CliRunner

import steerlab as sl
from steerlab.cli import app

TINY = {"add": [0, 2], "add_multi": [0, 0.5], "pca": [0, 4], "ablate": [0, 1], "refusal": [0, 1],
        "angular": [0], "selective": [0, 90], "cast": [0, 4]}


@pytest.fixture(scope="module")
def comparison(smollm):
    return sl.evaluate.compare(smollm, "sentiment", methods=list(TINY), strengths=TINY, n_prompts=2,
                               n_kl_prompts=2, max_new_tokens=6, ppl_tokens=24, n_task=3, selection_stride=6)


def test_compare_runs_every_method_with_held_out_prompts(comparison):
    c = comparison
    assert c.notes == []
    assert list(c.methods) == list(TINY)
    counts = c.results["method"].value_counts()
    assert counts["baseline"] == 1 and all(counts[m] == len(s) for m, s in TINY.items())
    for column in ("sentiment", "probe", "perplexity", "kl", "accuracy", "repetition", "distinct_1", "distinct_2"):
        assert c.results[column].notna().all(), column
    # strength 0 of an addition is the unsteered model: its numbers are the baseline's
    base = c.results[c.results["method"] == "baseline"].iloc[0]
    zero = c.results[(c.results["method"] == "add") & (c.results["strength"] == 0)].iloc[0]
    assert zero["perplexity"] == base["perplexity"] and zero["sentiment"] == base["sentiment"]
    assert zero["kl"] == 0.0
    # held-out honesty: splits recorded, prompts disjoint from the training texts
    d = c.data
    assert d["train_pairs"] + d["test_pairs"] == 105 and d["test_pairs"] == 26
    assert d["overlap_behaviour_prompts_with_training_texts"] == 0
    train, _ = sl.data.load("sentiment").split(0.25, 0)
    assert d["train"]["hash"] == train.hash
    prompts = set(c.samples["prompt"])
    assert len(prompts) == 2 and not prompts & (set(train.positive) | set(train.negative))
    assert 0.5 <= d["probe"]["heldout_accuracy"] <= 1.0
    # the frontier holds only rows of the table, at least one per method
    assert set(c.frontier["method"]) == set(TINY)
    merged = c.frontier.merge(c.results, on=["method", "strength"], suffixes=("", "_r"))
    assert len(merged) == len(c.frontier)
    assert {"condition_heldout_f1", "condition_fires_on_behaviour_prompts"} <= set(c.methods["cast"]["info"])


def test_compare_report_is_written(comparison, tmp_path):
    paths = sl.report.write_report(comparison, tmp_path)
    results = pd.read_csv(paths["results"])
    assert len(results) == 1 + sum(len(s) for s in TINY.values())
    html = paths["report"].read_text()
    for method in TINY:
        assert f"<summary>{method}" in html
    assert "test pairs" in html and ">26<" in html


def test_compare_command_end_to_end(smollm, monkeypatch, tmp_path):
    from steerlab.cli import common

    monkeypatch.setattr(common, "load_model", lambda *a, **k: smollm)
    out = tmp_path / "cmp"
    result = CliRunner().invoke(app, ["compare", "--methods", "add,angular", "--strengths", "add=0,1;angular=0",
                                      "--prompts", "1", "--kl-prompts", "1", "--max-new-tokens", "4",
                                      "--ppl-tokens", "16", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "Frontier per method" in result.output and (out / "report.html").is_file()
    assert (out / "results.csv").is_file() and (out / "frontier.csv").is_file()
    assert (out / "figures" / "frontier.png").is_file()


@pytest.mark.parametrize("args, message", [
    (["--methods", "add,magic"], "magic"),
    (["--strengths", "add=x"], "numbers"),
    (["--strengths", "magic=1"], "METHOD"),
    (["--utility", "bleu"], "--utility"),
    (["--dataset", "no-such-set"], "no-such-set"),
    (["--prompts", "0"], "at least 1"),
])
def test_compare_bad_input_is_one_line_and_exit_code_2(args, message, tmp_path):
    result = CliRunner().invoke(app, ["compare", "--out", str(tmp_path / "x"), *args])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.output
