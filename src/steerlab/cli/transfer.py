"""``steerlab transfer fit|map``: carry a direction from one model into another through a fitted low-rank map."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from ..errors import DataError
from . import common
from .common import DEVICE, DTYPE, LAYERS_HELP, check_count, check_number, console, layer_spec, parse_layers

app = typer.Typer(help="Cross-model transfer (Master Key): fit a rank-r map between two models' activations on "
                       "shared texts, then map a direction from the source model into the target.\n\n"
                       "Example:  steerlab transfer fit --source smollm2 --target gemma3-270m --data formality "
                       "--source-layers 14 --out m.transfer",
                  no_args_is_help=True)


def _texts(texts: Path | None, data: str | None, prompts: str | None) -> list[str]:
    """The unlabeled texts: a file, both sides of contrastive sets, named prompt sets (any mix, deduplicated)."""
    import steerlab as sl

    from .core import read_texts

    out: list[str] = []
    if texts is not None:
        out += read_texts(texts)
    for name in (data or "").split(","):
        if name.strip():
            pairs = common.load_pairs(name.strip())
            out += list(pairs.positive) + list(pairs.negative)
    for name in (prompts or "").split(","):
        if name.strip():
            if name.strip() not in sl.data.prompt_names():
                raise DataError(f"--prompts {name.strip()!r} is not a prompt set; use {', '.join(sl.data.prompt_names())}")
            out += sl.data.prompts(name.strip())
    out = list(dict.fromkeys(out))
    if len(out) < 2:
        raise DataError("give the shared texts with --texts FILE, --data NAMES or --prompts NAMES (2 or more texts)")
    return out


def fit(
    source: str = typer.Option(..., "--source", "-s", help="The model the direction comes from ('smollm2', a folder, "
                                                           "a .gguf file or a hub id)."),
    target: str = typer.Option(..., "--target", "-t", help="The model the direction goes to."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the map (transfer.json + map.safetensors)."),
    texts: Path | None = typer.Option(None, help="A .txt (one per line), .jsonl or .json file of shared texts."),
    data: str | None = typer.Option(None, help="Contrastive sets whose texts (both sides, labels unused) to use, "
                                               "comma-separated: sentiment,formality,..."),
    prompts: str | None = typer.Option(None, help="Prompt sets to use, comma-separated: neutral, harmbench, donotanswer."),
    source_layers: str | None = typer.Option(None, help=f"Source layers (default all; give the direction's): {LAYERS_HELP}."),
    target_layers: str | None = typer.Option(None, help="Target layers to choose from (default: those of similar "
                                                        "relative depth, see --band; 'all' for every layer)."),
    ranks: str | None = typer.Option(None, help="Ranks to try, comma-separated (default 1,2,4,...,256 and full)."),
    positions: str = typer.Option("aligned", help="aligned (tokens ending at the same character in both), last or mean."),
    per_text: int = typer.Option(8, help="Aligned tokens kept per text (its last always)."),
    test: float = typer.Option(0.2, help="Share of texts held out to score layers and ranks by R²."),
    ridge: float = typer.Option(1e-4, help="Ridge, relative to the mean variance of the source activations."),
    band: float = typer.Option(0.2, help="Default target layers: relative depth within this of a source layer's."),
    seed: int = typer.Option(0, help="Seed of the held-out split and the token draw."),
    batch_size: int = typer.Option(16, help="Texts per forward pass."),
    force: bool = typer.Option(False, "--force", help="Replace --out if it is a saved map."),
    dtype: str | None = DTYPE, device: str = DEVICE,
) -> None:
    """Fit the source -> target map on shared unlabeled texts; layers and rank by held-out R².

    Example:  steerlab transfer fit --source smollm2 --target gemma3-270m --data formality,verbosity
              --source-layers 14 --out smollm-gemma.transfer
    """
    from ..directions import transfer as tr

    items = _texts(texts, data, prompts)
    layer_spec(source_layers, "--source-layers")
    if target_layers != "all":
        layer_spec(target_layers, "--target-layers")
    try:
        rank_list = [int(r) for r in ranks.split(",") if r.strip()] if ranks else None
    except ValueError:
        raise DataError(f"--ranks {ranks!r} must be whole numbers separated by commas, e.g. 4,16,64") from None
    if rank_list is not None and (not rank_list or min(rank_list) < 1):
        raise DataError(f"--ranks {ranks!r} must be positive whole numbers")
    if positions not in tr.POSITIONS:
        raise DataError(f"--positions {positions!r} must be one of {', '.join(tr.POSITIONS)}")
    check_count(per_text, "--per-text")
    check_count(batch_size, "--batch-size")
    check_number(test, "--test", 0.01, 0.99)
    check_number(ridge, "--ridge", 0.0)
    check_number(band, "--band", 0.0, 1.0)
    from ..io import check_owned, is_artifact

    check_owned(out, lambda p: is_artifact(p, tr.MARKER, tr.FORMAT), force, "transfer map", "--force")
    common.check_model_args(target, dtype, device)
    src = common.load_model(source, dtype, device)
    tgt = common.load_model(target, dtype, device)
    s_layers = parse_layers(source_layers, src.n_layers, option="--source-layers")
    t_layers: list[int] | str | None = "all" if target_layers == "all" else parse_layers(
        target_layers, tgt.n_layers, option="--target-layers")
    m = tr.fit(src, tgt, items, source_layers=s_layers, target_layers=t_layers, ranks=rank_list, positions=positions,
               per_text=per_text, test=test, seed=seed, ridge=ridge, band=band, batch_size=batch_size, progress=True)
    m.save(out, overwrite=force)
    table = m.table()
    best = table.loc[table.groupby("target_layer")["r2"].idxmax()].sort_values("r2", ascending=False)
    console.print(f"{len(items)} texts, {m.meta['n_samples']} paired samples "
                  f"({m.meta['n_held_out']} held out, from {round(test * m.meta['n_texts'])} texts)")
    console.print("best rank per target layer (held-out R²):")
    console.print(best.head(8).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    console.print(f"chosen: {m!r} -> {out}")


def map_direction(
    map_path: Path = typer.Option(..., "--map", help="A folder from `steerlab transfer fit`."),
    direction: Path = typer.Option(..., "--direction", "-d", help="A saved direction of the source model "
                                                                  "(from `steerlab extract`)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the target model's direction."),
    force: bool = typer.Option(False, "--force", help="Replace --out if it is a saved direction."),
) -> None:
    """Map a source direction through a fitted map: a direction for the target model, at the map's target layer.

    The result is the raw A v (its norm follows the target's scale); steer with it like any direction.

    Example:  steerlab transfer map --map smollm-gemma.transfer --direction happy.direction --out happy-gemma.direction
    """
    import steerlab as sl

    from ..directions import transfer as tr
    from ..directions.direction import FORMAT, MARKER
    from ..io import check_owned, is_artifact

    m = tr.load(map_path)
    d = sl.Direction.load(direction)
    check_owned(out, lambda p: is_artifact(p, MARKER, FORMAT), force, "direction", "--force")
    mapped = m.map(d)
    mapped.save(out, overwrite=force)
    layer = mapped.layers[0]
    console.print(f"{d!r} at source layer {m.source_layer} -> target layer {layer} of "
                  f"{(m.meta.get('target') or {}).get('name', '?')} (rank {m.rank}, held-out R² {m.r2:.3f}), "
                  f"norm {float(mapped[layer].norm()):.3g} -> {out}")
    console.print(f"steer with it: steerlab steer --model TARGET --direction {out} --layers {layer} --alpha 1 -p ...")


COMMANDS: dict[str, Callable[..., Any]] = {"fit": fit, "map": map_direction}


def register(parent: typer.Typer) -> None:
    """Add ``transfer fit`` and ``transfer map`` to ``parent``."""
    common.add_commands(app, COMMANDS)
    parent.add_typer(app, name="transfer")

