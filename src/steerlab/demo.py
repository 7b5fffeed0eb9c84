"""The main job, end to end on the embedded model: find the sentiment direction, pick layers with
the sweep, and steer neutral prompts at several strengths of both signs, scored by VADER.

Every strength of every prompt runs in one batch (one recipe per row).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from .interventions import Steering
    from .models import Model

DEFAULT_STRENGTHS = (-1.0, -0.5, 0.0, 0.5, 1.0)


@dataclass
class DemoResult:
    """What the demo found: the layer sweep, the layers chosen, and one row per (strength, prompt)."""

    sweep: pd.DataFrame
    layers: list[int]
    outputs: pd.DataFrame
    timings: dict[str, float] = field(default_factory=dict)

    def summary(self) -> pd.DataFrame:
        """Mean VADER compound score (−1 negative … +1 positive) per strength."""
        return (self.outputs.groupby("strength")["sentiment"].agg(["mean", "min", "max"]).reset_index()
                .rename(columns={"mean": "sentiment_mean", "min": "sentiment_min", "max": "sentiment_max"}))


def sentiment_scores(texts: list[str]) -> list[float]:
    """VADER's compound sentiment score of each text (an outside scorer with its own lexicon)."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()
    return [analyzer.polarity_scores(t)["compound"] for t in texts]


def run_demo(model: Model | None = None, n_prompts: int = 5, strengths: Sequence[float] = DEFAULT_STRENGTHS,
             max_new_tokens: int = 40, k_layers: int = 3, log: Callable[[str], object] = print,
             progress: bool | None = None) -> DemoResult:
    """Extract the sentiment direction on the embedded model and steer with it (see module docstring)."""
    import steerlab as sl

    timings: dict[str, float] = {}
    t = time.perf_counter()
    if model is None:
        log("loading the embedded model (SmolLM2-135M-Instruct) ...")
        model = sl.load("smollm2")
    timings["load"] = time.perf_counter() - t

    pairs = sl.data.load("sentiment")
    log(f"capturing {len(pairs)} sentiment pairs at every layer ...")
    t = time.perf_counter()
    acts = sl.directions.capture_pairs(model, pairs, batch_size=32, progress=progress)
    table = sl.directions.sweep(model, pairs, acts=acts)
    layers = sl.directions.recommend_layers(table, k=k_layers)
    direction = sl.directions.mean_diff(model, pairs, acts=acts)
    timings["extract"] = time.perf_counter() - t

    prompts = sl.data.prompts("neutral")[:n_prompts]
    rows: list[dict[str, object]] = []
    recipes: list[Steering | None] = []
    for strength in strengths:
        for prompt in prompts:
            rows.append({"strength": float(strength), "prompt": prompt})
            recipes.append(None if strength == 0 else sl.Steering([sl.Add(direction, alpha=strength, layers=layers)]))
    log(f"generating {len(rows)} rows ({len(prompts)} prompts x {len(strengths)} strengths) in one batch ...")
    t = time.perf_counter()
    out = model.generate([str(r["prompt"]) for r in rows], steering=recipes, max_new_tokens=max_new_tokens)
    timings["generate"] = time.perf_counter() - t
    frame = pd.DataFrame(rows)
    frame["output"] = out.texts
    frame["sentiment"] = sentiment_scores(out.texts)
    return DemoResult(sweep=table, layers=layers, outputs=frame, timings=timings)
