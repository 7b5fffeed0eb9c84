"""``steerlab compare``: every steering method on one model and data set, swept, scored, plotted, reported."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from ..errors import SteerlabError
from . import common
from .common import DEVICE, DTYPE, MODEL, console, err, fail


def parse_strengths(text: str | None, known: list[str]) -> dict[str, list[float]]:
    """``"add=0,2,4;pca=0,8"`` -> ``{"add": [0, 2, 4], "pca": [0, 8]}`` (finite, at most 1e4 in size)."""
    import math

    from ..interventions.base import MAX_STRENGTH

    out: dict[str, list[float]] = {}
    if not text:
        return out
    for part in text.split(";"):
        if not part.strip():
            continue
        name, sep, values = part.partition("=")
        name = name.strip()
        if not sep or name not in known:
            raise SteerlabError(f"--strengths {part.strip()!r} must look like METHOD=v1,v2 with METHOD one of "
                                f"{', '.join(known)}")
        try:
            out[name] = [float(v) for v in values.split(",") if v.strip()]
        except ValueError:
            raise SteerlabError(f"--strengths {part.strip()!r}: values must be numbers, e.g. add=0,2,4") from None
        if not out[name]:
            raise SteerlabError(f"--strengths {part.strip()!r} gives no values")
        bad = [v for v in out[name] if not math.isfinite(v) or abs(v) > MAX_STRENGTH]
        if bad:
            raise SteerlabError(f"--strengths {part.strip()!r}: {bad[0]!r} is not allowed; give finite numbers of at "
                                f"most {MAX_STRENGTH:g} in size")
    return out


def compare(
    out: Path = typer.Option(..., "--out", "-o", help="Folder for results.csv, frontier.csv, figures/, report.html."),
    dataset: str = typer.Option("sentiment", "--dataset", "-d", help="Bundled set or a .jsonl/.csv of pairs."),
    methods: str | None = typer.Option(
        None, help="Comma-separated methods (default: all of them): "
                   "add, add_multi, pca, ablate, refusal, angular, selective, cast."),
    prompts: int = typer.Option(16, help="Held-out behaviour prompts per strength."),
    kl_prompts: int = typer.Option(8, help="Neutral prompts for the KL metric."),
    max_new_tokens: int = typer.Option(40, help="Tokens generated per prompt and strength."),
    strengths: str | None = typer.Option(None, help="Override grids, e.g. 'add=0,2,4;pca=0,8'."),
    utility: str = typer.Option("perplexity", help="Frontier cost axis: perplexity or kl."),
    test: float = typer.Option(0.25, help="Share of pairs held out from fitting."),
    seed: int = typer.Option(0, help="Seed of the splits and the arithmetic items."),
    ppl_tokens: int = typer.Option(256, help="Tokens of the reference text scored for perplexity (0: all)."),
    selection_stride: int = typer.Option(1, help="Score every k-th layer's candidate when choosing the refusal "
                                                 "direction (Arditi et al.'s selection; 1: every layer)."),
    model: str = MODEL, dtype: str | None = DTYPE, device: str = DEVICE,
    force: bool = typer.Option(False, "--force", help="Write over an earlier report in --out (a folder of other "
                                                      "files is never written into)."),
    ray_actors: int = typer.Option(0, "--ray-actors", help="Run the generations on this many Ray actors (0: in this "
                                                           "process); connects to RAY_ADDRESS when set."),
    ray_cpus: float = typer.Option(1.0, "--ray-cpus", help="CPUs each Ray actor reserves."),
) -> None:
    """Compare steering methods: strength sweeps, behaviour vs utility, the frontier, and a report.

    Fits each method on a train split, sweeps its strength on held-out prompts, scores behaviour and utility.

    Writes results.csv, frontier.csv, figures/ and report.html (figures, samples, recipes, hashes).

    Example:  steerlab compare --dataset sentiment --methods add,pca,ablate,angular,selective,cast --out cmp/

    On a Ray cluster:  RAY_ADDRESS=auto steerlab compare --methods add,pca --ray-actors 8 --ray-cpus 4 --out cmp/
    """
    import steerlab as sl

    known = sl.recipes.method_names()
    chosen = [m.strip() for m in (methods or ",".join(known)).split(",") if m.strip()]
    unknown = [m for m in chosen if m not in known]
    if unknown or not chosen:
        fail(f"--methods {methods!r}: unknown {', '.join(unknown) or '(none given)'}; "
             f"choose from {', '.join(known)}")
    if utility not in sl.evaluate.UTILITIES:
        fail(f"--utility {utility!r} must be one of {', '.join(sl.evaluate.UTILITIES)}")
    if min(prompts, kl_prompts, max_new_tokens, selection_stride) < 1:
        fail("--prompts, --kl-prompts, --max-new-tokens and --selection-stride must be at least 1")
    if ray_actors < 0 or not 0 < ray_cpus <= 1024:
        fail("--ray-actors must be 0 or more and --ray-cpus above 0")
    if ray_actors:
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            fail("--ray-actors needs Ray: pip install 'steerlab[ray]'")
    if not 0 < test < 1:
        fail(f"--test {test} must be between 0 and 1")
    if out.exists() and not out.is_dir():
        fail(f"--out {str(out)!r} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not (out / "report.html").is_file():
            fail(f"--out {str(out)!r} holds other files and no steerlab report; give a new or empty folder")
        if not force:
            fail(f"--out {str(out)!r} already holds a report; pass --force to write over it, or give another folder")
    grids = parse_strengths(strengths, known)
    common.load_pairs(dataset, "--dataset")   # a bad name fails here, before the model loads
    started = time.perf_counter()
    m = common.load_model(model, dtype, device)

    def log(msg: str) -> None:
        err.print(f"[dim]{time.perf_counter() - started:6.0f} s[/]  {msg}", highlight=False)

    generate = None
    if ray_actors:
        from functools import partial

        from ..engines.ray import RayGenerator

        log(f"starting {ray_actors} Ray actors ...")
        generate = RayGenerator(partial(sl.load, model, dtype=dtype, device=device), actors=ray_actors,
                                num_cpus=ray_cpus)
    try:
        result = sl.evaluate.compare(m, dataset, chosen, n_prompts=prompts, n_kl_prompts=kl_prompts,
                                     max_new_tokens=max_new_tokens, test=test, seed=seed, strengths=grids,
                                     utility=utility, ppl_tokens=ppl_tokens or None,
                                     selection_stride=selection_stride, model_source=model, log=log,
                                     generate=generate)
    finally:
        if generate is not None:
            generate.close()
    log("writing figures and the report ...")
    paths = sl.report.write_report(result, out, command="steerlab " + " ".join(sys.argv[1:]))
    _print_summary(console, result)
    console.print(f"report -> {paths['report']}  (results.csv, frontier.csv, figures/ beside it)")
    console.print(f"[dim]done in {time.perf_counter() - started:.0f} s[/]")


def _print_summary(console: Console, result: Any) -> None:
    import pandas as pd

    b, u = result.behaviour, result.utility
    base = result.results[result.results["method"] == "baseline"].iloc[0]
    view = Table(title=f"Frontier per method ({b} vs {u}; unsteered: {base[b]:+.3f} @ {base[u]:.3g})",
                 title_justify="left")
    for col in ("method", "frontier (strength: behaviour @ utility)", f"best {b}", "within budget"):
        view.add_column(col)
    for _, row in result.summary().iterrows():
        budget = row.get(f"budget_{b}")
        within = ("-" if budget is None or pd.isna(budget)
                  else f"{budget:+.3f} (strength {row['budget_strength']:g})")
        view.add_row(row["method"], row["frontier"], f"{row[f'best_{b}']:+.3f} @ {row[f'{u}_at_best']:.3g}", within)
    console.print(view)
    for note in result.notes:
        console.print(f"[yellow]note:[/] {note}")


COMMANDS: dict[str, Callable[..., Any]] = {"compare": compare}


def register(app: typer.Typer) -> None:
    """Add ``compare`` to ``app``."""
    common.add_commands(app, COMMANDS)
