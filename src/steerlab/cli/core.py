"""The main job from the command line: ``demo``, ``capture``, ``extract``, ``sweep`` and ``steer``."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from . import common
from .common import DEVICE, DTYPE, LAYERS_HELP, MODEL, console, err, fail, layer_spec, parse_layers


def demo(
    prompts: int = typer.Option(5, help="How many neutral prompts to steer."),
    strengths: str = typer.Option("-1,-0.5,0,0.5,1", help="Comma-separated strengths (alpha times the mean-difference vector)."),
    max_new_tokens: int = typer.Option(40, help="Tokens to generate per row."),
    layers: int = typer.Option(3, "--k-layers", help="How many consecutive layers to steer."),
) -> None:
    """The main job on the embedded model: sentiment direction -> layer sweep -> steered generations.

    Example:  steerlab demo --prompts 3 --strengths -1,0,1
    """
    from ..demo import run_demo

    try:
        values = [float(s) for s in strengths.split(",") if s.strip()]
    except ValueError:
        fail(f"--strengths {strengths!r} must be comma-separated numbers, e.g. -2,0,2")
    if not values:
        fail("--strengths is empty; give e.g. -2,0,2")
    started = time.perf_counter()
    result = run_demo(n_prompts=prompts, strengths=values, max_new_tokens=max_new_tokens, k_layers=layers,
                      log=lambda m: err.print(f"[dim]{m}[/]"))
    sweep = result.sweep
    table = Table(title="Where sentiment lives (held-out probe accuracy per layer)", title_justify="left")
    for col in ("layer", "probe_acc", "cohens_d", "opposite_sign"):
        table.add_column(col, justify="right")
    for _, row in sweep.iterrows():
        if int(row["layer"]) % 3 == 0 or int(row["layer"]) in result.layers:
            mark = " *" if int(row["layer"]) in result.layers else ""
            table.add_row(f"{int(row['layer'])}{mark}", f"{row['probe_acc']:.2f}", f"{row['cohens_d']:.1f}",
                          str(bool(row["opposite_sign"])))
    console.print(table)
    console.print(f"steering at layers {result.layers} (* above) with the mean-difference vector\n")
    out = Table(title="Steered generations (VADER compound: -1 negative ... +1 positive)", title_justify="left",
                show_lines=True)
    out.add_column("alpha", justify="right")
    out.add_column("sentiment", justify="right")
    out.add_column("prompt -> output")
    for _, row in result.outputs.iterrows():
        text = row["output"].replace("\n", " ")
        out.add_row(f"{row['strength']:+.1f}", f"{row['sentiment']:+.2f}",
                    f"[bold]{row['prompt']}[/]\n{text[:160]}{'...' if len(text) > 160 else ''}")
    console.print(out)
    summary = result.summary()
    console.print("mean sentiment by alpha: " + ", ".join(
        f"{s:+.1f} -> {m:+.2f}" for s, m in zip(summary["strength"], summary["sentiment_mean"])))
    console.print(f"[dim]done in {time.perf_counter() - started:.0f} s "
                  f"(load {result.timings['load']:.0f} s, extract {result.timings['extract']:.0f} s, "
                  f"generate {result.timings['generate']:.0f} s)[/]")


def read_texts(path: Path) -> list[str]:
    """Texts from a .txt (one per line), .jsonl (field text/prompt) or .json list."""
    from ..errors import DataError

    if not path.is_file():
        raise DataError(f"no file at {str(path)!r}")
    raw = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        texts = []
        for i, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError:
                raise DataError(f"{path}:{i} is not valid JSON") from None
            value = item if isinstance(item, str) else item.get("text", item.get("prompt"))
            if not isinstance(value, str):
                raise DataError(f"{path}:{i} has no 'text' or 'prompt' field")
            texts.append(value)
    elif path.suffix == ".json":
        texts = json.loads(raw)
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise DataError(f"{path} must hold a JSON list of strings")
    else:
        texts = [line for line in raw.splitlines() if line.strip()]
    if not texts:
        raise DataError(f"{path} holds no texts")
    return texts


def capture(
    out: Path = typer.Option(..., "--out", "-o", help="Folder for sharded safetensors + manifest.json."),
    texts: Path | None = typer.Option(None, help="A .txt (one per line), .jsonl or .json file of texts."),
    data: str | None = typer.Option(None, help="A contrastive set (bundled name or .jsonl/.csv); see --side."),
    side: str = typer.Option("positive", help="With --data: positive or negative."),
    sites: str = typer.Option("resid_post", help="Site kinds or full names, comma-separated."),
    layers: str | None = typer.Option(None, help=f"Layers for site kinds (default all): {LAYERS_HELP}."),
    positions: str = typer.Option("last", help="last, mean or all (every token)."),
    chat: bool = typer.Option(False, help="Wrap each text in the chat template."),
    batch_size: int = typer.Option(16, help="Texts per forward pass (and per shard)."),
    model: str = MODEL, dtype: str | None = DTYPE, device: str = DEVICE,
) -> None:
    """Capture activations over texts to disk (resumable: run it again after a crash).

    Example:  steerlab capture --data sentiment --sites resid_post --layers 8-12 --out acts/
    """
    if (texts is None) == (data is None):
        fail("give exactly one of --texts FILE or --data NAME")
    if data is not None:
        if side not in ("positive", "negative"):
            fail(f"--side {side!r} must be positive or negative")
        items = getattr(common.load_pairs(data), side)
    else:
        assert texts is not None
        items = read_texts(texts)
    layer_spec(layers)
    m = common.load_model(model, dtype, device)
    site_list = [s.strip() for s in sites.split(",") if s.strip()]
    acts = m.capture(items, sites=site_list, layers=parse_layers(layers, m.n_layers), positions=positions,
                     chat=chat, batch_size=batch_size, out=out, progress=True)
    console.print(f"captured {len(acts)} texts x {len(acts.sites)} sites ({positions}) -> {out}")


def extract(
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write the Direction to (e.g. happy.direction)."),
    data: str = typer.Option("sentiment", help="Bundled set name or a .jsonl/.csv with positive/negative."),
    method: str = typer.Option("mean_diff", help="mean_diff, pca or probe."),
    layers: str | None = typer.Option(None, help=f"Layers (default all): {LAYERS_HELP}."),
    site: str = typer.Option("resid_post", help="Site kind to read."),
    positions: str = typer.Option("last", help="last or mean."),
    chat: bool = typer.Option(False, help="Wrap each text in the chat template."),
    model: str = MODEL, dtype: str | None = DTYPE, device: str = DEVICE,
) -> None:
    """Extract a direction (one vector per layer) from a contrastive set.

    Example:  steerlab extract --data sentiment --method mean_diff --out happy.direction
    """
    import steerlab as sl

    methods = {"mean_diff": sl.directions.mean_diff, "pca": sl.directions.pca, "probe": sl.directions.probe}
    if method not in methods:
        fail(f"--method {method!r} is not one of {', '.join(methods)}")
    pairs = common.load_pairs(data)
    layer_spec(layers)
    m = common.load_model(model, dtype, device)
    direction = methods[method](m, pairs, layers=parse_layers(layers, m.n_layers), site=site, positions=positions,
                                chat=chat)
    direction.save(out)
    norms = direction.norms()
    console.print(f"{method} direction over {len(direction)} layers of {m.name} -> {out}")
    console.print("norms: " + ", ".join(f"{k}:{v:.1f}" for k, v in norms.items()))


def sweep(
    data: str = typer.Option("sentiment", help="Bundled set name or a .jsonl/.csv with positive/negative."),
    site: str = typer.Option("resid_post", help="Site kind to read."),
    csv: Path | None = typer.Option(None, help="Also write the table as CSV."),
    k: int | None = typer.Option(None, help="How many layers to recommend."),
    model: str = MODEL, dtype: str | None = DTYPE, device: str = DEVICE,
) -> None:
    """Per-layer separability of a contrastive set, and the layers to steer at.

    Example:  steerlab sweep --data refusal --csv refusal_sweep.csv
    """
    import steerlab as sl

    pairs = common.load_pairs(data)
    m = common.load_model(model, dtype, device)
    table = sl.directions.sweep(m, pairs, site=site)
    layers = sl.directions.recommend_layers(table, k=k)
    view = Table(title=f"{pairs.name} on {m.name} ({site}, held-out split)", title_justify="left")
    for col in table.columns:
        view.add_column(col, justify="right")
    for _, row in table.iterrows():
        view.add_row(*[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row.tolist()])
    console.print(view)
    console.print(f"recommended layers: {layers}")
    if csv is not None:
        table.to_csv(csv, index=False)
        console.print(f"table -> {csv}")


def steer(
    prompt: list[str] = typer.Option(..., "--prompt", "-p", help="A prompt (repeat for several)."),
    direction: Path | None = typer.Option(None, help="A Direction folder from `steerlab extract`."),
    recipe: Path | None = typer.Option(None, help="A Steering folder (.steer) instead of --direction."),
    alpha: float = typer.Option(4.0, help="Strength for --direction (Add alpha)."),
    layers: str | None = typer.Option(None, help=f"Layers for --direction (default: all it holds): {LAYERS_HELP}."),
    site: str = typer.Option("resid_post", help="Site kind for --direction."),
    positions: str = typer.Option("all", help="all, prompt, generated or last."),
    max_new_tokens: int = typer.Option(64, help="Tokens to generate."),
    compare: bool = typer.Option(False, help="Also show the unsteered output."),
    save_recipe: Path | None = typer.Option(None, help="Write the recipe used to this folder."),
    sample: bool = typer.Option(False, help="Sample instead of greedy decoding."),
    seed: int | None = typer.Option(None, help="Seed for sampling."),
    model: str = MODEL, dtype: str | None = DTYPE, device: str = DEVICE,
) -> None:
    """Generate with a steering recipe (or a direction and a strength).

    Example:  steerlab steer --direction happy.direction --alpha 1.5 --layers 8-12 -p "Tell me about your day."
    """
    import steerlab as sl

    if (direction is None) == (recipe is None):
        fail("give exactly one of --direction DIR or --recipe DIR")
    # read the files before the model loads: a wrong path fails at once
    loaded = sl.Steering.load(recipe) if recipe is not None else None
    d = sl.Direction.load(direction) if direction is not None else None
    layer_spec(layers)
    m = common.load_model(model, dtype, device)
    if loaded is not None:
        loaded.check_model(m.fingerprint)
        steering = loaded
    else:
        assert d is not None
        d.check_model(m.fingerprint)
        chosen = parse_layers(layers, m.n_layers)
        steering = sl.Steering([sl.Add(d, alpha=alpha, layers=chosen, site=site, positions=positions)])
    rows = list(prompt)
    recipes: list[sl.Steering | None] = [steering] * len(rows)
    if compare:
        rows, recipes = rows + rows, recipes + [None] * len(rows)
    out = m.generate(rows, steering=recipes, max_new_tokens=max_new_tokens, do_sample=sample, seed=seed)
    for i, p in enumerate(prompt):
        console.print(f"[bold]{p}[/]")
        console.print(f"[green]steered:[/] {out.texts[i]}")
        if compare:
            console.print(f"[dim]plain:[/]   {out.texts[len(prompt) + i]}")
        console.print()
    if save_recipe is not None:
        steering.save(save_recipe)
        console.print(f"recipe -> {save_recipe}")


COMMANDS: dict[str, Callable[..., Any]] = {"demo": demo, "capture": capture, "extract": extract, "sweep": sweep, "steer": steer}


def register(app: typer.Typer) -> None:
    """Add ``demo``, ``capture``, ``extract``, ``sweep`` and ``steer`` to ``app``."""
    common.add_commands(app, COMMANDS)
