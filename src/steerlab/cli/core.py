"""The main job from the command line: ``demo``, ``capture``, ``extract``, ``sweep``, ``steer`` and ``sites``."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from ..errors import SteerlabError
from . import common
from .common import (
    DEVICE,
    DTYPE,
    FORCE,
    LAYERS_HELP,
    MODEL,
    check_count,
    check_number,
    console,
    err,
    fail,
    layer_spec,
    parse_layers,
)


def sites(
    layers: str | None = typer.Option(None, help=f"Only these layers' sites (default all): {LAYERS_HELP}."),
    model: str = MODEL, dtype: str | None = DTYPE, device: str = DEVICE,
) -> None:
    """List a model's sites (what capture, steering and the analyses can read or edit) with their shapes.

    Shapes are per token, after [batch, tokens].

    Example:  steerlab sites --model smollm2 --layers 0
    """
    from ..sites import parse_site

    layer_spec(layers)
    m = common.load_model(model, dtype, device)
    keep = parse_layers(layers, m.n_layers)
    view = Table(title=f"sites of {m.name} ({m.family}, {m.n_layers} layers, d_model {m.d_model})",
                 title_justify="left")
    view.add_column("site")
    view.add_column("shape", justify="right")
    for name in m.sites():
        layer = parse_site(name, m.n_layers).layer
        if keep is not None and (layer is None or layer not in keep):
            continue
        view.add_row(name, str(list(m.site_shape(name))))
    console.print(view)


DEFAULT_ALPHA = 0.75  # the README's strength for a mean-difference direction
MAX_ALPHA = 1e4


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
    for value in values:
        common.check_number(value, "--strengths", -MAX_ALPHA, MAX_ALPHA)
    common.check_count(prompts, "--prompts")
    common.check_count(max_new_tokens, "--max-new-tokens")
    common.check_count(layers, "--k-layers")
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
    try:
        raw = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    if path.suffix == ".jsonl":
        texts = []
        for i, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except (json.JSONDecodeError, RecursionError):
                raise DataError(f"{path}:{i} is not valid JSON (one string, or an object with 'text')") from None
            value = item if isinstance(item, str) else (
                item.get("text", item.get("prompt")) if isinstance(item, dict) else None)
            if not isinstance(value, str):
                raise DataError(f"{path}:{i} has no 'text' or 'prompt' field")
            texts.append(value)
    elif path.suffix == ".json":
        try:
            texts = json.loads(raw)
        except (json.JSONDecodeError, RecursionError) as e:
            raise DataError(f"{path} is not valid JSON ({str(e)[:120]})") from None
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise DataError(f"{path} must hold a JSON list of strings")
    else:
        texts = [line for line in raw.splitlines() if line.strip()]
    if not texts:
        raise DataError(f"{path} holds no texts")
    if not all(t.strip() for t in texts):
        raise DataError(f"{path} holds an empty text; every text needs at least one character")
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
    force: bool = typer.Option(False, "--force", help="Start --out over when it holds a different capture "
                                                      "(a folder of other files is never touched)."),
) -> None:
    """Capture activations over texts to disk (resumable: run it again after a crash).

    Rerun the same command after a crash and it resumes ("resuming: k of n shards done"); a
    capture of other texts, model weights, dtype, device or settings into the same folder is
    refused unless --force. Read it back with sl.activations.open_activations(folder).

    Example:  steerlab capture --data sentiment --sites resid_post --layers 8-12 --out acts/
    """
    from ..activations.memory import POSITIONS
    from ..activations.store import check_folder

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
    if positions not in POSITIONS:
        fail(f"--positions {positions!r} must be one of {', '.join(POSITIONS)}")
    check_count(batch_size, "--batch-size")
    check_folder(out)
    site_list = [s.strip() for s in sites.split(",") if s.strip()]
    _check_sites(site_list)
    m = common.load_model(model, dtype, device)
    acts = m.capture(items, sites=site_list, layers=parse_layers(layers, m.n_layers), positions=positions,
                     chat=chat, batch_size=batch_size, out=out, progress=True, overwrite=force)
    console.print(f"captured {len(acts)} texts x {len(acts.sites)} sites ({positions}) -> {out}")


def extract(
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write the Direction to (e.g. happy.direction)."),
    data: str = typer.Option("sentiment", help="Bundled set name or a .jsonl/.csv with positive/negative."),
    method: str = typer.Option("mean_diff", help="mean_diff, pca or probe."),
    layers: str | None = typer.Option(None, help=f"Layers (default all): {LAYERS_HELP}."),
    site: str = typer.Option("resid_post", help="Site kind to read."),
    positions: str = typer.Option("last", help="last or mean."),
    chat: bool = typer.Option(False, help="Wrap each text in the chat template."),
    model: str = MODEL, dtype: str | None = DTYPE, device: str = DEVICE, force: bool = FORCE,
) -> None:
    """Extract a direction (one vector per layer) from a contrastive set.

    Example:  steerlab extract --data sentiment --method mean_diff --out happy.direction
    """
    import steerlab as sl

    methods: dict[str, Callable[..., sl.Direction]] = {
        "mean_diff": sl.directions.mean_diff, "pca": sl.directions.pca, "probe": sl.directions.probe}
    if method not in methods:
        fail(f"--method {method!r} is not one of {', '.join(methods)}")
    if positions not in ("last", "mean"):
        fail(f"--positions {positions!r} must be last or mean")
    _check_sites([site])
    _check_out(out, "direction", force)
    pairs = common.load_pairs(data)
    layer_spec(layers)
    m = common.load_model(model, dtype, device)
    direction = methods[method](m, pairs, layers=parse_layers(layers, m.n_layers), site=site, positions=positions,
                                chat=chat)
    direction.save(out, overwrite=force)
    norms = direction.norms()
    console.print(f"{method} direction over {len(direction)} layers of {m.name} -> {out}")
    console.print("norms: " + ", ".join(f"{k}:{v:.1f}" for k, v in norms.items()))


def sweep(
    data: str = typer.Option("sentiment", help="Bundled set name or a .jsonl/.csv with positive/negative."),
    site: str = typer.Option("resid_post", help="Site kind to read."),
    csv: Path | None = typer.Option(None, help="Also write the table as CSV."),
    k: int | None = typer.Option(None, help="How many layers to recommend."),
    model: str = MODEL, dtype: str | None = DTYPE, device: str = DEVICE,
    force: bool = typer.Option(False, "--force", help="Replace an existing --csv file."),
) -> None:
    """Per-layer separability of a contrastive set, and the layers to steer at.

    Example:  steerlab sweep --data refusal --csv refusal_sweep.csv
    """
    import steerlab as sl

    from .. import io

    if k is not None:
        check_count(k, "--k")
    _check_sites([site])
    if csv is not None:
        io.check_owned(csv, lambda p: p.is_file() and p.suffix == ".csv", force, "CSV table", "--force")
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
        io.atomic_write_text(csv, table.to_csv(index=False))
        console.print(f"table -> {csv}")


def steer(
    prompt: list[str] = typer.Option(..., "--prompt", "-p", help="A prompt (repeat for several)."),
    direction: Path | None = typer.Option(None, help="A Direction folder from `steerlab extract`."),
    recipe: Path | None = typer.Option(None, help="A Steering folder (.steer) instead of --direction."),
    alpha: float = typer.Option(DEFAULT_ALPHA, help="Strength for --direction (Add alpha; the README's 0.75 "
                                                    "suits a mean-difference direction)."),
    layers: str | None = typer.Option(None, help="Layers for --direction (default: the three held layers from the "
                                                 f"middle of the model on, as the layer sweep recommends): {LAYERS_HELP}."),
    site: str = typer.Option("resid_post", help="Site kind for --direction."),
    positions: str = typer.Option("all", help="all, prompt, generated or last."),
    max_new_tokens: int = typer.Option(64, help="Tokens to generate."),
    compare: bool = typer.Option(False, help="Also show the unsteered output."),
    save_recipe: Path | None = typer.Option(None, help="Write the recipe used to this folder."),
    sample: bool = typer.Option(False, help="Sample instead of greedy decoding."),
    seed: int | None = typer.Option(None, help="Seed for sampling."),
    model: str = MODEL, dtype: str | None = DTYPE, device: str = DEVICE,
    force: bool = typer.Option(False, "--force", help="Let --save-recipe replace an earlier recipe there."),
    any_model: bool = typer.Option(False, "--any-model", help="Apply a recipe or direction made for another model "
                                                              "with the same number of layers and width."),
) -> None:
    """Generate with a steering recipe (or a direction and a strength).

    Defaults: alpha 0.75 at three layers from the middle of the model (15-17 of SmolLM2's 30).

    Example:  steerlab steer --direction happy.direction --alpha 1.5 --layers 8-12 -p "Tell me about your day."
    """
    import steerlab as sl

    if (direction is None) == (recipe is None):
        fail("give exactly one of --direction DIR or --recipe DIR")
    # read the files and check every option before the model loads: a mistake fails at once
    loaded = sl.Steering.load(recipe) if recipe is not None else None
    d = sl.Direction.load(direction) if direction is not None else None
    layer_spec(layers)
    check_number(alpha, "--alpha", -MAX_ALPHA, MAX_ALPHA)
    check_count(max_new_tokens, "--max-new-tokens")
    _check_sites([site])
    from ..interventions.positions import parse_positions

    parse_positions(positions)
    if save_recipe is not None:
        _check_out(save_recipe, "steering recipe", force)
    m = common.load_model(model, dtype, device)
    if loaded is not None:
        loaded.check_model(m.fingerprint, same_shape=any_model)
        steering = loaded
        if any_model:
            steering.meta["model"] = dict(m.fingerprint)
    else:
        assert d is not None
        d.check_model(m.fingerprint, same_shape=any_model)
        chosen = parse_layers(layers, m.n_layers) if layers else default_layers(d.layers, m.n_layers)
        steering = sl.Steering([sl.Add(d, alpha=alpha, layers=chosen, site=site, positions=positions)])
        if any_model:
            steering.meta["model"] = dict(m.fingerprint)
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
        steering.save(save_recipe, overwrite=force)
        console.print(f"recipe -> {save_recipe}")


def default_layers(held: list[int], n_layers: int, k: int = 3) -> list[int]:
    """The ``k`` held layers from the middle of the model on (the layer sweep's usual choice), nearest first."""
    middle = n_layers // 2
    usable = [layer for layer in held if 0 <= layer < n_layers]
    if not usable:
        raise SteerlabError(f"the direction holds layers {held}, none of them in this model's 0-{n_layers - 1}")
    return sorted(sorted(usable, key=lambda layer: (abs(layer - middle - (k - 1) / 2), layer))[:k])


def _check_sites(names: list[str]) -> None:
    """Site kinds or full names, checked by syntax before any model loads."""
    from ..sites import KINDS, parse_site

    if not names:
        fail("--sites is empty; give a site kind such as resid_post")
    for name in names:
        if name not in KINDS:
            parse_site(name)


def _check_out(path: Path, what: str, force: bool) -> None:
    """Refuse an output folder that exists, unless --force and it holds an earlier ``what`` (checked before loading)."""
    from .. import io
    from ..directions.direction import FORMAT as DIRECTION
    from ..directions.direction import MARKER as DIRECTION_MARKER
    from ..interventions.steering import FORMAT as RECIPE
    from ..interventions.steering import MARKER as RECIPE_MARKER

    marker, form = (DIRECTION_MARKER, DIRECTION) if what == "direction" else (RECIPE_MARKER, RECIPE)
    io.check_owned(path, lambda p: p.is_dir() and io.is_artifact(p, marker, form), force, what, "--force")


COMMANDS: dict[str, Callable[..., Any]] = {"demo": demo, "capture": capture, "extract": extract, "sweep": sweep,
                                           "steer": steer, "sites": sites}


def register(app: typer.Typer) -> None:
    """Add ``demo``, ``capture``, ``extract``, ``sweep``, ``steer`` and ``sites`` to ``app``."""
    common.add_commands(app, COMMANDS)
