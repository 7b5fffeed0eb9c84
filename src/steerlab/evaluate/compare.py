"""Compare steering methods on one model and data set: fit on a train split, sweep each method's
strength on held-out prompts, score behaviour and utility, and find each method's frontier.

Held-out honesty: directions, layers, planes, selections and conditions are fit on the training
split of the pairs only; behaviour is measured on prompts disjoint from them (checked), and the
sizes of every split are recorded in ``Comparison.data``.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch

from ..data import ContrastiveSet, load, reference_text
from ..directions import probe, probe_score
from ..errors import SteerlabError
from ..interventions import Steering
from ..io import texts_hash
from ..models import Model
from ..recipes import FitContext, Fitted, fit, method_names, spec
from ..recipes.cast import condition_fires
from .behaviour import ProbeScore
from .frontier import frontier
from .sweep import sweep
from .task import TaskAccuracy, arithmetic_items
from .tasks import Task, neutral_split, task_for
from .utility import KL, Fluency, Perplexity

#: What ``steerlab compare`` runs by default: every method it knows.
DEFAULT_METHODS = tuple(method_names())
#: Utility metrics the frontier can use, and the budget that "matched utility" means for each.
UTILITIES = {"perplexity": ("ratio", 1.25), "kl": ("absolute", 0.1)}


@dataclass
class Comparison:
    """Everything a comparison produced: the tidy results (one row per method x strength, plus the
    unsteered ``baseline`` row), each method's frontier, the generations, the fitted methods' details
    and recipes, the layer sweep, data hashes and split sizes, settings and timings."""

    results: pd.DataFrame
    frontier: pd.DataFrame
    samples: pd.DataFrame
    layer_sweep: pd.DataFrame
    methods: dict[str, dict[str, Any]]
    recipes: dict[tuple[str, float], Steering | None]
    data: dict[str, Any]
    settings: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def behaviour(self) -> str:
        return self.settings["behaviour"]

    @property
    def utility(self) -> str:
        return self.settings["utility"]

    def summary(self) -> pd.DataFrame:
        """Per method: its frontier as ``strength: behaviour @ utility`` points, the best behaviour at
        any strength, and the best within the utility budget (perplexity ≤ 1.25x the unsteered one,
        or KL ≤ 0.1): the "matched utility" number papers report."""
        b, u = self.behaviour, self.utility
        base = self.results[self.results["method"] == "baseline"].iloc[0]
        kind, budget = UTILITIES[u]
        limit = base[u] * budget if kind == "ratio" else budget
        rows = []
        for name in self.methods:
            own = self.results[self.results["method"] == name].dropna(subset=[b, u])
            if own.empty:
                continue
            front = self.frontier[self.frontier["method"] == name]
            best = own.loc[own[b].idxmax()]
            within = own[own[u] <= limit]
            pick = within.loc[within[b].idxmax()] if not within.empty else None
            rows.append({
                "method": name, "param": best["param"],
                "frontier": "; ".join(f"{r['strength']:g}: {r[b]:+.3f} @ {r[u]:.3g}" for _, r in front.iterrows()),
                "best_strength": best["strength"], f"best_{b}": best[b], f"{u}_at_best": best[u],
                "budget_strength": None if pick is None else pick["strength"],
                f"budget_{b}": None if pick is None else pick[b],
                f"budget_{u}": None if pick is None else pick[u],
            })
        return pd.DataFrame(rows)


def _hash_texts(texts: Iterable[str]) -> str:
    return texts_hash(texts)


def _baseline() -> Fitted:
    return Fitted("baseline", "none", (0.0,), lambda s: None, {"note": "the unsteered model"})


def compare(model: Model, dataset: str | os.PathLike | ContrastiveSet = "sentiment",
            methods: Iterable[str] = DEFAULT_METHODS, n_prompts: int = 16, n_kl_prompts: int = 8,
            max_new_tokens: int = 40, test: float = 0.25, seed: int = 0,
            strengths: Mapping[str, Sequence[float]] | None = None, utility: str = "perplexity",
            ppl_tokens: int | None = 256, n_task: int = 24, selection_stride: int = 1,
            model_source: str | None = None, log: Callable[[str], object] | None = None,
            generate: Callable[..., Any] | None = None) -> Comparison:
    """Run the comparison (module docstring) and return a ``Comparison``.

    ``dataset``: a bundled name or a pairs file (``sl.data.load``). ``methods``: names from
    ``sl.recipes.method_names()``. ``strengths``: ``{method: [values]}`` overriding the default
    grids. ``utility``: the frontier's cost axis, ``"perplexity"`` or ``"kl"``. ``selection_stride``:
    score every k-th layer's candidate when choosing the refusal-style direction (Arditi et al.'s
    selection). ``model_source``: what ``sl.load`` was given (for the report's reproduction snippet).
    ``log``: a callable receiving progress lines. ``generate``: what runs the generations (default
    ``model.generate``; a ``steerlab.engines.ray.RayGenerator`` spreads them over Ray actors).
    """
    say: Callable[[str], object] = log or (lambda message: None)
    methods = list(methods)
    for name in methods:
        spec(name)
    if not methods:
        raise SteerlabError("methods is empty; name at least one of " + ", ".join(method_names()))
    if utility not in UTILITIES:
        raise SteerlabError(f"utility={utility!r} is not allowed; use one of {', '.join(UTILITIES)}")
    if n_prompts < 1 or n_kl_prompts < 1:
        raise SteerlabError("n_prompts and n_kl_prompts must be at least 1")
    strengths = dict(strengths or {})
    timings: dict[str, float] = {}
    notes: list[str] = []
    started = time.perf_counter()
    pairs = load(dataset)
    train, held = pairs.split(test, seed)
    task = task_for(model, train, held, n_prompts, seed)
    notes.extend(task.notes)
    kl_prompts = neutral_split(seed)[n_prompts:n_prompts + n_kl_prompts]
    if task.dataset == "refusal":
        kl_prompts = neutral_split(seed)[:n_kl_prompts]
    train_texts = set(train.positive) | set(train.negative)
    overlap = sorted(set(task.prompts) & train_texts)
    if overlap:
        raise SteerlabError(f"{len(overlap)} behaviour prompt(s) are also training texts (e.g. {overlap[0]!r}); "
                            "the evaluation would not be held out")

    ctx = FitContext(model, train, chat=task.chat, seed=seed, score=task.score, condition=task.condition,
                     condition_fire=task.condition_fire, selection_stride=selection_stride)
    say(f"capturing {len(train)} training pairs at {model.n_layers} layers ...")
    t = time.perf_counter()
    _ = ctx.captured   # capture now, so its time is measured apart from the fits
    layer_sweep = ctx.sweep.copy()
    timings["capture"] = time.perf_counter() - t

    scorers = list(task.behaviour)
    probe_info: dict[str, Any] = {}
    if task.probe:
        layer = ctx.layers(1)[0]
        direction = probe(model, train, acts=ctx.acts("resid_post").select([layer]), test=0.0, seed=seed)
        name = f"layers.{layer}.resid_post"
        acts = model.capture(held.positive + held.negative, sites=name, positions="last", chat=task.chat,
                             progress=False)
        logits = probe_score(direction, acts.tensor(name), layer)
        truth = torch.tensor([1] * len(held) + [0] * len(held), dtype=torch.bool)
        probe_info = {"layer": layer, "heldout_accuracy": round(float(((logits > 0) == truth).float().mean()), 4),
                      "heldout_pairs": len(held)}
        scorers.append(ProbeScore(direction, layer))
    scorers += [Fluency(), Perplexity(max_tokens=ppl_tokens), KL(kl_prompts),
                TaskAccuracy(arithmetic_items(n_task, seed))]
    settings: dict[str, Any] = {
                "model": model.name, "model_source": model_source or model.name, "dataset": pairs.name,
                "methods": methods, "behaviour": task.primary,
                "behaviour_columns": [c for s in task.behaviour for c, hb in s.columns.items() if hb is not None]
                + (["probe"] if task.probe else []),
                "utility": utility, "n_prompts": len(task.prompts), "n_kl_prompts": len(kl_prompts),
                "max_new_tokens": max_new_tokens, "test": test, "seed": seed, "ppl_tokens": ppl_tokens,
                "n_task": n_task, "selection_stride": selection_stride, "decoding": "greedy",
                "scorers": [repr(s) for s in scorers],
                "higher_is_better": {c: hb for s in scorers for c, hb in s.columns.items()}}

    cache: dict = {}
    t = time.perf_counter()
    say("scoring the unsteered model ...")
    tables = [sweep(model, _baseline(), prompts=task.prompts, scorers=scorers, max_new_tokens=max_new_tokens,
                    cache=cache, generate=generate)]
    timings["baseline"] = time.perf_counter() - t
    infos: dict[str, dict[str, Any]] = {}
    recipes: dict[tuple[str, float], Steering | None] = {}
    for i, name in enumerate(methods, 1):
        t = time.perf_counter()
        say(f"[{i}/{len(methods)}] {name}: fitting on the training split ...")
        try:
            fitted = fit(model, name, strengths=strengths.get(name), context=ctx)
        except SteerlabError as e:
            notes.append(f"{name}: skipped ({e})")
            say(f"[{i}/{len(methods)}] {name}: skipped ({e})")
            continue
        fit_seconds = time.perf_counter() - t
        grid = fitted.strengths
        say(f"[{i}/{len(methods)}] {name}: {len(grid)} strengths x {len(task.prompts)} prompts in one batch ...")
        table = sweep(model, fitted, prompts=task.prompts, scorers=scorers, max_new_tokens=max_new_tokens,
                      cache=cache, generate=generate)
        tables.append(table)
        recipes.update({(name, s): fitted.recipe(s) for s in grid})
        info = dict(fitted.info)
        if name == "cast":
            info.update(_cast_checks(model, ctx, task))
        infos[name] = {"param": fitted.param, "summary": spec(name).summary, "strengths": list(grid),
                       "identity": fitted.identity, "info": info, "fit_seconds": round(fit_seconds, 1)}
        timings[name] = time.perf_counter() - t
        say(f"[{i}/{len(methods)}] {name}: done in {timings[name]:.0f} s")

    results = pd.concat(tables, ignore_index=True)
    samples = pd.DataFrame([row for table in tables for row in table.attrs.get("samples", [])])
    results.attrs = {}
    steered = results[results["method"] != "baseline"]
    front = frontier(steered, task.primary, utility, settings["higher_is_better"].get(task.primary, True),
                     settings["higher_is_better"].get(utility, False))
    fit_rows, val_rows = ctx.split
    data = {
        "dataset": pairs.describe(), "train": train.describe(), "test": held.describe(),
        "train_pairs": len(train), "test_pairs": len(held),
        "selection_fit_pairs": len(fit_rows), "selection_val_pairs": len(val_rows),
        "behaviour_prompts": {"n": len(task.prompts), "hash": _hash_texts(task.prompts), "source": task.prompt_source},
        "kl_prompts": {"n": len(kl_prompts), "hash": _hash_texts(kl_prompts)},
        "reference_text": {"hash": _hash_texts([reference_text()]), "tokens_used": ppl_tokens},
        "task_items": {"n": n_task, "kind": "arithmetic (a ± b, 2..20)", "seed": seed},
        "condition": {"source": task.condition_source,
                      "train": task.condition.describe() if task.condition is not None else None,
                      "test": task.condition_test.describe() if task.condition_test is not None else None},
        "overlap_behaviour_prompts_with_training_texts": len(overlap),
        "probe": probe_info,
    }
    timings["total"] = time.perf_counter() - started
    settings["environment"] = {"python": platform.python_version(), "torch": torch.__version__,
                               "threads": torch.get_num_threads(), "machine": platform.machine()}
    try:
        import transformers

        from .. import __version__
        settings["environment"].update({"transformers": transformers.__version__, "steerlab": __version__})
    except ImportError:  # pragma: no cover
        pass
    return Comparison(results, front, samples, layer_sweep, infos, recipes, data, settings,
                      {k: round(v, 1) for k, v in timings.items()}, notes)


def _cast_checks(model: Model, ctx: FitContext, task: Task) -> dict[str, float]:
    """How the chosen CAST condition behaves on prompts it was not fit on."""
    cond = ctx.condition_fit
    out = {"condition_fires_on_behaviour_prompts": round(float(condition_fires(model, cond, task.prompts).float()
                                                                .mean()), 4)}
    if task.condition_test is not None:
        fire_side = task.condition_test.positive if task.condition_fire == "positive" else task.condition_test.negative
        quiet_side = task.condition_test.negative if task.condition_fire == "positive" else task.condition_test.positive
        fires = condition_fires(model, cond, list(fire_side)).float()
        quiet = condition_fires(model, cond, list(quiet_side)).float()
        tp, fp = float(fires.sum()), float(quiet.sum())
        fn = len(fire_side) - tp
        out.update({"condition_heldout_fire_rate_should_fire": round(float(fires.mean()), 4),
                    "condition_heldout_fire_rate_should_not": round(float(quiet.mean()), 4),
                    "condition_heldout_f1": round(2 * tp / max(1.0, 2 * tp + fp + fn), 4)})
    return out
