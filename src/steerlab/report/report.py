"""Write a comparison to a folder: CSV tables, figures, saved recipes and one self-contained report.html."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from ..evaluate.compare import Comparison
from ..interventions import Steering
from ..io import atomic_write_bytes, atomic_write_text, short_hash
from .figures import frontier_figure, layer_figure, strength_figure
from .html import esc, figure, page, pre, table

#: Columns shown per metric kind, in the order the report lists them.
UTILITY_COLUMNS = ["perplexity", "kl", "accuracy", "repetition", "distinct_1", "distinct_2"]


def recipe_digest(steering: Steering) -> str:
    """A short sha256 of a recipe's settings and tensors (stable across saves; no timestamps)."""
    def parts():
        for item in steering:
            yield json.dumps({"kind": item.kind, "config": item.config()}, sort_keys=True, default=str).encode()
            for name, t in sorted(item.tensors().items()):
                yield name.encode()
                yield t.detach().float().cpu().contiguous().numpy().tobytes()

    return short_hash(parts())


def recipe_doc(steering: Steering) -> dict:
    """What a recipe does, as JSON: each intervention's settings and its tensors' shapes."""
    return {"meta": {k: v for k, v in steering.meta.items() if k != "model"},
            "interventions": [{"kind": it.kind, "config": it.config(),
                               "tensors": {n: list(t.shape) for n, t in it.tensors().items()}} for it in steering]}


def _name(method: str, strength: float) -> str:
    return f"{method}_{strength:g}".replace("-", "m").replace(".", "p")


def write_report(comparison: Comparison, out: str | os.PathLike, command: str | None = None) -> dict[str, Path]:
    """Write ``results.csv``, ``frontier.csv``, ``summary.csv``, ``samples.csv``, ``figures/*.png``,
    ``recipes/*.steer`` and ``report.html`` under ``out``; return their paths."""
    folder = Path(out)
    (folder / "figures").mkdir(parents=True, exist_ok=True)
    c = comparison
    paths = {"results": folder / "results.csv", "frontier": folder / "frontier.csv", "summary": folder / "summary.csv",
             "samples": folder / "samples.csv", "report": folder / "report.html"}
    c.results.to_csv(paths["results"], index=False)
    c.frontier.to_csv(paths["frontier"], index=False)
    summary = c.summary()
    summary.to_csv(paths["summary"], index=False)
    c.samples.to_csv(paths["samples"], index=False)

    digests: dict[tuple[str, float], str] = {}
    for (method, strength), steering in c.recipes.items():
        if steering is None:
            continue
        steering.save(folder / "recipes" / f"{_name(method, strength)}.steer", overwrite=True)  # a rerun replaces its own
        digests[(method, strength)] = recipe_digest(steering)

    higher = c.settings.get("higher_is_better", {})
    behaviours = c.settings.get("behaviour_columns", [c.behaviour])
    figs = {
        "frontier": frontier_figure(c.results, c.behaviour, ("perplexity", "kl"), higher,
                                    f"{c.settings['model']} on {c.settings['dataset']}: behaviour vs utility"),
        "strength": strength_figure(c.results, behaviours + UTILITY_COLUMNS[:4]),
        "layers": layer_figure(c.layer_sweep, _layer_marks(c), list(c.methods)),
    }
    for name, png in figs.items():
        atomic_write_bytes(folder / "figures" / f"{name}.png", png)
        paths[f"figure_{name}"] = folder / "figures" / f"{name}.png"
    atomic_write_text(paths["report"], render(c, figs, summary, digests, command))
    return paths


def _layer_marks(c: Comparison) -> dict[str, list[int]]:
    """The layers each method steers (or its one chosen layer), for the layer figure."""
    marks: dict[str, list[int]] = {}
    for method, info in c.methods.items():
        layers = info["info"].get("layers", info["info"].get("layer"))
        if isinstance(layers, int):
            layers = [layers]
        if isinstance(layers, list):
            marks[method] = layers
    return marks


def render(c: Comparison, figs: dict[str, bytes], summary: pd.DataFrame, digests: dict[tuple[str, float], str],
           command: str | None) -> str:
    """The report page's HTML."""
    s, d = c.settings, c.data
    b, u = c.behaviour, c.utility
    intro = (f"<p>Model <b>{esc(s['model'])}</b>, data set <b>{esc(s['dataset'])}</b>, methods "
             f"{esc(', '.join(s['methods']))}. Behaviour: <b>{esc(b)}</b> (higher means more of the steered "
             f"behaviour); utility cost on the frontier: <b>{esc(u)}</b>. Greedy decoding, "
             f"{s['max_new_tokens']} new tokens per prompt. Total time {c.timings.get('total', 0):.0f} s.</p>")
    sections = [
        ("Frontier", figure(figs["frontier"], "behaviour against utility for every method",
                            "Each method's strengths (faint points) and its Pareto frontier (line, labels are "
                            "strengths); the star is the unsteered model.")
         + "<h3>Per method</h3>" + table(summary, text_columns=("frontier",))
         + "<p class='note'>budget_*: the best behaviour within the utility budget (perplexity at most 1.25 x "
           "the unsteered value, or KL at most 0.1).</p>"),
        ("All results", table(c.results.drop(columns=["seconds"], errors="ignore"))),
        ("Frontier rows", table(c.frontier.drop(columns=["seconds"], errors="ignore"))),
        ("Metrics against strength", figure(figs["strength"], "each metric against strength per method",
                                            "Dashed: the unsteered model. Strength units differ per method.")),
        ("Layer sweep (training pairs)", figure(figs["layers"], "per-layer separability of the training pairs",
                                                "Marks: the layers each method steers.")),
        ("Sample generations", _samples(c)),
        ("Methods and recipes", _methods(c, digests)),
        ("Data, splits and hashes", _data(d)),
        ("How to reproduce", _reproduce(c, command)),
    ]
    if c.notes:
        sections.insert(1, ("Notes", "<ul>" + "".join(f"<li>{esc(n)}</li>" for n in c.notes) + "</ul>"))
    return page(f"steerlab compare: {s['dataset']} on {s['model']}", sections, intro)


def _samples(c: Comparison, n_prompts: int = 3) -> str:
    if c.samples.empty:
        return "<p>No generations.</p>"
    prompts = list(dict.fromkeys(c.samples["prompt"]))[:n_prompts]
    parts = []
    for method in dict.fromkeys(c.samples["method"]):
        own = c.samples[(c.samples["method"] == method) & (c.samples["prompt"].isin(prompts))]
        grid = own.pivot_table(index="strength", columns="prompt", values="text", aggfunc="first")[prompts]
        grid = grid.reset_index()
        parts.append(f"<details{' open' if method == 'baseline' else ''}><summary>{esc(method)}</summary>"
                     + table(grid, text_columns=tuple(prompts)) + "</details>")
    return (f"<p class='note'>The first {len(prompts)} behaviour prompts at every strength "
            "(all generations are in samples.csv).</p>" + "".join(parts))


def _methods(c: Comparison, digests: dict[tuple[str, float], str]) -> str:
    parts = []
    for method, info in c.methods.items():
        rows = [{"strength": s, "recipe": f"recipes/{_name(method, s)}.steer" if (method, s) in digests else
                 "(none: the unsteered model)", "sha256": digests.get((method, s), "")} for s in info["strengths"]]
        frontier_strengths = set(c.frontier.loc[c.frontier["method"] == method, "strength"])
        shown = next((c.recipes[(method, s)] for s in info["strengths"]
                      if s in frontier_strengths and c.recipes.get((method, s)) is not None), None)
        shown = shown or next((r for (m, _), r in c.recipes.items() if m == method and r is not None), None)
        parts.append(
            f"<details><summary>{esc(method)}: {esc(info['summary'])}</summary>"
            f"<p>Strength is <code>{esc(info['param'])}</code>; grid {esc(info['strengths'])}; fitted in "
            f"{info['fit_seconds']} s.</p>" + pre(info["info"]) + table(pd.DataFrame(rows), text_columns=("recipe",))
            + ("<p>The recipe at one frontier strength (every strength differs only in its strength):</p>"
               + pre(recipe_doc(shown)) if shown is not None else "") + "</details>")
    return "".join(parts)


def _data(d: dict) -> str:
    split = pd.DataFrame([
        {"part": "training pairs (fit every direction, layer, plane, condition)", "size": d["train_pairs"],
         "hash": d["train"]["hash"]},
        {"part": "  of which held back to choose among candidate directions", "size": d["selection_val_pairs"],
         "hash": ""},
        {"part": "test pairs (held-out probe accuracy)", "size": d["test_pairs"], "hash": d["test"]["hash"]},
        {"part": "behaviour prompts (disjoint from every training text)", "size": d["behaviour_prompts"]["n"],
         "hash": d["behaviour_prompts"]["hash"]},
        {"part": "KL prompts (neutral)", "size": d["kl_prompts"]["n"], "hash": d["kl_prompts"]["hash"]},
        {"part": "arithmetic items", "size": d["task_items"]["n"], "hash": ""},
    ])
    return (table(split, text_columns=("part", "hash"))
            + f"<p>Behaviour prompts: {esc(d['behaviour_prompts']['source'])}. Overlap with training texts: "
              f"{d['overlap_behaviour_prompts_with_training_texts']}.</p>" + pre(d))


def _reproduce(c: Comparison, command: str | None) -> str:
    s = c.settings
    source = s.get("model_source", s["model"])
    cmd = command or (f"steerlab compare --model {source} --dataset {s['dataset']} --methods "
                      f"{','.join(s['methods'])} --out DIR")
    grids = {m: info["strengths"] for m, info in c.methods.items()}
    options: dict[str, object] = {k: s[k] for k in ("max_new_tokens", "test", "seed", "utility", "ppl_tokens", "n_task",
                                 "selection_stride") if k in s}
    if "n_prompts" in s:
        options.update(n_prompts=s["n_prompts"], n_kl_prompts=s.get("n_kl_prompts"))
    args = "".join(f", {k}={v!r}" for k, v in options.items())
    code = (f"import steerlab as sl\nmodel = sl.load({source!r})\n"
            f"result = sl.evaluate.compare(model, {s['dataset']!r}, methods={s['methods']!r},\n"
            f"                             strengths={grids!r}{args})\n"
            "sl.report.write_report(result, 'DIR')\n")
    return (f"<p>Command:</p>{pre(cmd)}<p>Or from Python:</p>{pre(code)}<p>Settings and environment:</p>"
            + pre({k: v for k, v in s.items() if k != "scorers"}) + "<p>Timings (s):</p>" + pre(c.timings)
            + "<p class='note'>Decoding is greedy, so a rerun on the same machine and versions gives the same "
              "generations.</p>")
