"""Online stopping during generation, the evaluation of selectors, the audit files and its command."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from steerlab.cli import app
from steerlab.errors import SteerlabError
from steerlab.reasoning import audit, confidence_stopper, evaluate, sample, stop_at, token_confidence
from steerlab.reasoning.evaluation import Record, wilson
from tiny import tiny_model

PROMPTS = ["one", "two two", "three three three", "four"]


@pytest.fixture(scope="module")
def tiny():
    return tiny_model("llama")


def test_online_stopping_matches_the_replayed_rule(tiny):
    full = sample(tiny, PROMPTS, segment=4, max_new_tokens=16, seed=7, chat=False, layers=[0])
    confs = [token_confidence(t.top_logprobs) for t in full]
    threshold = float(torch.cat(confs).median())
    online = sample(tiny, PROMPTS, segment=4, max_new_tokens=16, seed=7, chat=False, layers=[0],
                    stop=confidence_stopper(threshold, window=3))
    stops = [stop_at(c, threshold, window=3) for c in confs]
    assert any(s is not None for s in stops)
    for f, o, s in zip(full, online, stops):
        if s is None:
            assert o.tokens == f.tokens and not o.stopped
        else:
            assert o.stopped and o.tokens == f.tokens[:s]


def _record(q: int, s: int, answer: str | None, correct: bool, length: int, score: float) -> Record:
    sig = {"net_change": score, "cumulative_change": -score, "aligned_change": score, "confidence": score,
           "lowest_group": score, "bottom_10": score, "tail": score, "length": float(length)}
    per_layer = {"net_change": np.array([score]), "cumulative_change": np.array([-score]),
                 "aligned_change": np.array([score])}
    return Record(q, s, answer, correct, list(range(length)), sig, per_layer, np.array([score, float(length)]),
                  np.full(length, 5.0))


def test_evaluate_counts_majority_and_tokens_by_hand():
    # calibration: questions 0, 1; test: 2 (majority right), 3 (majority wrong, one right sample)
    records = [
        _record(0, 0, "1", True, 4, 0.9), _record(0, 1, "2", False, 4, 0.1), _record(0, 2, "1", True, 4, 0.8),
        _record(1, 0, "5", False, 6, 0.2), _record(1, 1, "3", True, 2, 0.7), _record(1, 2, "5", False, 6, 0.3),
        _record(2, 0, "7", True, 3, 0.6), _record(2, 1, "7", True, 3, 0.9), _record(2, 2, "8", False, 5, 0.1),
        _record(3, 0, "4", False, 5, 0.2), _record(3, 1, "4", False, 5, 0.1), _record(3, 2, "9", True, 2, 0.95),
    ]
    rows, aurocs, settings = evaluate(records, {0, 1}, decode=lambda t: "")
    by = {r["selector"]: r for r in rows}
    assert by["majority"]["accuracy"] == 0.5 and by["majority"]["tokens"] == (11 + 12) / 2
    assert by["majority@1"]["accuracy"] == 0.5 and by["majority@1"]["tokens"] == (3 + 5) / 2
    assert by["shortest"]["accuracy"] == 1.0 and by["shortest"]["tokens"] == (3 * 3 + 3 * 2) / 2
    assert by["net_change"]["accuracy"] == 1.0  # the highest score is right in both test questions
    assert by["online_stop"]["tokens"] == by["majority"]["tokens"]  # constant confidence: nothing stops
    assert settings["test_questions"] == 2 and settings["oracle"] == 1.0
    auc = {(r["signal"], r["layer"]): r["auroc"] for r in aurocs}
    # right samples are 3, 3, 2 tokens long, wrong ones 5, 5, 5: shorter always ranks right first
    assert auc[("net_change", "all")] == 1.0 and auc[("length", "all")] == 1.0
    assert auc[("cumulative_change", "0")] == 1.0  # oriented: lower cumulative change ranks first
    low, high = wilson(1, 2)
    assert by["majority"]["ci_low"] == low and by["majority"]["ci_high"] == high


def test_wilson_interval_by_hand():
    low, high = wilson(5, 10)
    half = 1.96 * (0.025 + 1.96**2 / 400) ** 0.5 / (1 + 1.96**2 / 10)
    assert (low, high) == pytest.approx((0.5 - half, 0.5 + half))


def test_audit_writes_its_files(tiny, tmp_path):
    pytest.importorskip("reasoning_gym")
    out = tmp_path / "audit"
    results = audit(tiny, "basic_arithmetic", questions=4, samples=2, out=out, max_new_tokens=6, segment=2,
                    window=2, progress=False)
    for name in ("selection.csv", "signals.csv", "results.json", "report.html", "figures/accuracy_vs_tokens.png",
                 "figures/latent_trajectories.png"):
        assert (out / name).is_file()
    with open(out / "selection.csv") as f:
        selectors = {row["selector"] for row in csv.DictReader(f)}
    assert {"majority", "shortest", "confidence_vote", "lt_combined", "probe", "online_stop",
            "online_lt", "sequential_net_change"} <= selectors
    assert results["questions"] == 4
    with pytest.raises(SteerlabError, match="already holds"):
        audit(tiny, "basic_arithmetic", questions=4, samples=2, out=out, max_new_tokens=6, progress=False)


def test_cli_help_and_errors():
    runner = CliRunner()
    result = runner.invoke(app, ["audit", "--help"])
    assert result.exit_code == 0 and "steerlab audit --task" in result.output
    result = runner.invoke(app, ["audit", "--task", "nope", "--out", "x"])
    assert result.exit_code == 2 and "--task" in result.output


def test_docs_block_runs(tiny, monkeypatch):
    """docs/reasoning.md's code block runs as written (on a tiny model instead of the embedded one)."""
    import re
    from pathlib import Path

    import steerlab as sl

    text = (Path(__file__).parents[1] / "docs" / "reasoning.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.DOTALL)
    monkeypatch.setattr(sl, "load", lambda *a, **k: tiny)
    scope: dict = {}
    exec(compile(blocks[0], "docs/reasoning.md", "exec"), scope)  # noqa: S102 -- running the docs is the test
    assert len(scope["traces"]) == 4 and set(scope["scores"][0]) >= {"net_change", "lowest_group", "length"}
    for block in blocks[1:]:
        exec(compile(block, "docs/reasoning.md", "exec"), {})  # noqa: S102


def test_cli_audit_runs_end_to_end(tiny, tmp_path, monkeypatch):
    pytest.importorskip("reasoning_gym")
    from steerlab.cli import common

    monkeypatch.setattr(common, "load_model", lambda *a, **k: tiny)
    out = tmp_path / "a"
    result = CliRunner().invoke(app, ["audit", "--out", str(out), "--questions", "4", "--samples", "2",
                                      "--max-new-tokens", "6", "--segment", "2", "--window", "2"])
    assert result.exit_code == 0, result.output
    assert "online_lt" in result.output and "vs majority" in result.output
    with open(out / "selection.csv") as f:
        rows = {row["selector"]: row for row in csv.DictReader(f)}
    assert float(rows["majority"]["vs_majority"]) == 0.0


def test_within_question_auroc_by_hand():
    from steerlab.reasoning import within_question_auroc

    def rec(q, s, score, correct):
        return Record(q, s, "1", correct, [1], {}, {}, np.zeros(1), np.zeros(1), scores={"x": score})

    records = [rec(0, 0, 1.0, False), rec(0, 1, 2.0, True),   # ranked right: 1.0
               rec(1, 0, 1.0, True), rec(1, 1, 2.0, False),   # ranked wrong: 0.0
               rec(2, 0, 5.0, True), rec(2, 1, 9.0, True)]    # one class only: left out
    assert within_question_auroc(records, "x") == 0.5
    assert np.isnan(within_question_auroc(records[4:], "x"))


def test_probe_vote_weighs_answers_by_the_probability_of_being_right(monkeypatch):
    """With a probe that returns the first feature as P(right), the vote sums it per answer by hand."""
    from steerlab.reasoning import evaluation
    from steerlab.reasoning.probe import CorrectnessProbe

    class FirstFeature(CorrectnessProbe):
        def prob(self, x):
            return np.atleast_2d(x)[:, 0]

    monkeypatch.setattr(evaluation, "fit_probe", lambda *a, **k: FirstFeature(None))
    records = [
        _record(0, 0, "1", True, 4, 0.9), _record(0, 1, "2", False, 4, 0.1),
        _record(1, 0, "5", False, 6, 0.2), _record(1, 1, "3", True, 2, 0.7),
        # q2: "7" weighs 0.3 + 0.3 = 0.6 > "8" 0.5; q3: "4" weighs 0.2 + 0.1 = 0.3 < "9" 0.95
        _record(2, 0, "7", True, 3, 0.3), _record(2, 1, "7", True, 3, 0.3), _record(2, 2, "8", False, 5, 0.5),
        _record(3, 0, "4", False, 5, 0.2), _record(3, 1, "4", False, 5, 0.1), _record(3, 2, "9", True, 2, 0.95),
    ]
    rows, _, _ = evaluate(records, {0, 1}, decode=lambda t: "")
    by = {r["selector"]: r for r in rows}
    assert by["probe_vote"]["accuracy"] == 1.0 and by["majority"]["accuracy"] == 0.5
    assert by["probe"]["accuracy"] == 0.5  # best single sample by the probe picks "8" in q2
    assert by["probe_vote"]["tokens"] == by["majority"]["tokens"]
