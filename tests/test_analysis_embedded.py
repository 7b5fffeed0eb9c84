"""End-to-end checks of the probe map, do-interventions and subspace check on the embedded model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import steerlab as sl
from steerlab.data.contrastive import ContrastiveSet

pytestmark = pytest.mark.slow
BUNDLED = Path(sl.__file__).parent / "data" / "bundled" / "refusal.jsonl"


def test_refusal_probe_map_separates_held_out_prompts(smollm):
    rows = [json.loads(line) for line in BUNDLED.read_text().splitlines()]
    pairs = ContrastiveSet([r["positive"] for r in rows], [r["negative"] for r in rows], "refusal")
    train, held = pairs.split(0.25, seed=0)
    probe = sl.analysis.fit_probe(smollm, train.subset(range(20)), layers=15, C=0.01)
    texts = held.positive[:4] + held.negative[:4]
    table = sl.analysis.probe_map(smollm, texts, probe, layers=[15])
    last = table[table["tail"] == -1].sort_values("text")["prob"].tolist()
    right = sum(p > 0.5 for p in last[:4]) + sum(p < 0.5 for p in last[4:])
    assert right >= 7, last
    assert sum(last[:4]) / 4 > sum(last[4:]) / 4 + 0.2


def test_zeroing_the_query_step_breaks_the_answer(smollm):
    prompts = ["Paris is in France. Rome is in Italy. Berlin is in",
               "Tokyo is in Japan. Cairo is in Egypt. Madrid is in"]
    spans = sl.analysis.step_spans(smollm, prompts, sep=". ")
    assert [len(s) for s in spans] == [3, 3]
    table = sl.analysis.step_interventions(smollm, prompts, [" Germany", " Spain"], spans, modes=("zero",))
    summary = sl.analysis.necessity_metrics(table).set_index("step")
    assert summary["accuracy_before"].eq(1.0).all()
    assert summary.loc[2, "accuracy"] == 0.0 and summary.loc[2, "flip_correct_to_wrong"] == 1.0
    assert summary.loc[0, "dlogp_gold"] > summary.loc[2, "dlogp_gold"]


def test_the_real_difference_direction_is_no_illusion(smollm):
    clean, corrupt = "The capital of France is", "The capital of Italy is"
    site = "layers.0.mlp.neurons"
    h = {t: smollm.capture([t], sites=site, positions="all")[site][0][3] for t in (clean, corrupt)}
    check = sl.analysis.subspace_check(smollm, corrupt, clean, h[clean] - h[corrupt], 0, answers=(" Paris", " Rome"),
                                       position=3)
    table = check.table.set_index("part")
    assert not check.illusion
    assert table.loc["direction", "normalized"] > 0.9
    assert table.loc["row_space", "effect"] == pytest.approx(table.loc["direction", "effect"], rel=1e-3)
