"""``steerlab controller``: learned steering recipes (a trained weighting controller)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from ..errors import DataError
from . import common
from .common import DEVICE, DTYPE, LAYERS_HELP, MODEL


def controller(
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the recipe (.steer), usable by `steerlab steer`."),
    input_layers: str = typer.Option("6-9", help=f"Layers the controller reads (last prompt token): {LAYERS_HELP}."),
    layers: str | None = typer.Option(None, help="Layers it steers (default: every layer after the inputs)."),
    scale: float = typer.Option(4.0, help="lambda: the addition is s * lambda * w_l * r_l (the paper's 4.0)."),
    n_train: int = typer.Option(48, help="HarmBench and bundled harmful prompts (each) and 2x harmless, to train on."),
    epochs: int = typer.Option(10, help="Training epochs (AdamW, lr 5e-5, batch 8; best epoch kept)."),
    seed: int = typer.Option(0, help="Seed of the prompt shuffle and the training."),
    force: bool = typer.Option(False, "--force", help="Replace --out if it is a saved recipe."),
    model: str = MODEL, dtype: str | None = DTYPE, device: str = DEVICE,
) -> None:
    """Train a Guiding Giants controller (harmful vs harmless) and save its weighted refusal-steering recipe.

    The refusal direction is the mean difference of the same training prompts (chat-templated, last token) at
    each steered layer. Held-out prompts of `refusal-eval` (same seed) are disjoint from these.

    Example:  steerlab controller --model smollm2 --input-layers 6-9 --scale 4 --out guard.steer
    """
    import steerlab as sl

    common.check_count(n_train, "--n-train")
    common.check_count(epochs, "--epochs")
    common.check_number(scale, "--scale")
    if out.exists() and not force:
        raise DataError(f"--out {str(out)!r} exists; choose a new folder or pass --force")
    common.layer_spec(input_layers, "--input-layers")
    common.layer_spec(layers)
    m = common.load_model(model, dtype, device)
    inputs = common.parse_layers(input_layers, m.n_layers, option="--input-layers") or []
    steered = common.parse_layers(layers, m.n_layers)
    split = sl.evaluate.refusal_prompts(n_train=2 * n_train, n_val=0, n_test=0, seed=seed)
    harmful = split["train"]["harmful"][:n_train] + list(sl.data.load("refusal").positive)[:n_train]
    harmless = split["train"]["harmless"]
    with common.err.status("training the controller ..."):
        fit = sl.recipes.train_controller(m, harmful, harmless, input_layers=inputs, layers=steered, epochs=epochs,
                                          seed=seed)
        pairs = sl.data.ContrastiveSet(positive=harmful, negative=harmless[:len(harmful)])
        direction = sl.directions.mean_diff(m, pairs, layers=fit.layers, chat=True)
    recipe = sl.recipes.weighted(fit, direction, scale=scale)
    recipe.meta["training"] = {"history": fit.history, "n_harmful": len(harmful), "n_harmless": len(harmless),
                               "seed": seed}
    recipe.save(out, overwrite=force)
    last = fit.history[-1]
    typer.echo(f"controller reads layers {fit.input_layers}, steers {fit.layers[0]}-{fit.layers[-1]}; "
               f"training loss {last['loss']:.3f}, accuracy {last['accuracy']:.2f} -> {out}")


COMMANDS: dict[str, Callable[..., Any]] = {"controller": controller}


def register(app: typer.Typer) -> None:
    """Add the learned-steering commands to ``app``."""
    common.add_commands(app, COMMANDS)
