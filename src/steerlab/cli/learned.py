"""``steerlab controller``, ``steerlab grains``, ``steerlab amortize``: learned steering (issue 16)."""

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
    layers: str | None = typer.Option(None, help="Layers it steers, e.g. 10-29 or -3--1 (default: every layer after the inputs)."),
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


def grains(
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the GrAInS direction."),
    layer: int = typer.Option(15, help="Layer whose block output the direction is read at (negatives from the end)."),
    data: str = typer.Option("sentiment", "--data", help="Pairs: a bundled set name or a .jsonl/.csv of pairs "
                                                          "(positive = preferred)."),
    pairs: int = typer.Option(50, help="How many pairs to use (the first N)."),
    k: int = typer.Option(10, help="Tokens masked per text (the most positive, then the most negative)."),
    steps: int = typer.Option(20, help="Integrated-gradients steps (zero baseline)."),
    recipe: Path | None = typer.Option(None, help="Also write the GrAInS recipe (norm-kept 10*alpha*v) here."),
    alpha: float = typer.Option(4.0, help="alpha of --recipe (the authors' default 4)."),
    force: bool = typer.Option(False, "--force", help="Replace --out / --recipe if they are earlier outputs."),
    model: str = MODEL, dtype: str | None = DTYPE, device: str = DEVICE,
) -> None:
    """Build a GrAInS direction: integrated-gradients token attribution, masked re-runs, PC1 of the differences.

    Example:  steerlab grains --data sentiment --layer 15 --out happy.direction --recipe happy.steer --alpha 1
    """
    import steerlab as sl

    common.check_count(pairs, "--pairs")
    common.check_count(k, "--k")
    common.check_count(steps, "--steps")
    common.check_number(alpha, "--alpha")
    for path, what in ((out, "--out"), (recipe, "--recipe")):
        if path is not None and path.exists() and not force:
            raise DataError(f"{what} {str(path)!r} exists; choose a new path or pass --force")
    sets = common.load_pairs(data)
    m = common.load_model(model, dtype, device)
    chosen = common.one_layer(layer, m.n_layers)
    n = min(pairs, len(sets))
    with common.err.status(f"attributing {n} pairs ..."):
        d = sl.directions.grains(m, sets.positive[:n], sets.negative[:n], layers=[chosen], k=k, steps=steps)
    d.save(out, overwrite=force)
    typer.echo(f"GrAInS direction at layer {chosen} from {n} pairs (|v| = {float(d[chosen].norm()):.3f}) -> {out}")
    if recipe is not None:
        sl.recipes.grains(d, chosen, alpha).save(recipe, overwrite=force)
        typer.echo(f"recipe: 10*{alpha:g}*v added at layer {chosen}, each token's norm kept -> {recipe}")


def amortize(
    recipe: Path = typer.Option(..., "--recipe", "-r", help="A Steering folder (.steer), bakeable or not."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the checkpoint (model + tokenizer)."),
    layer: int | None = typer.Option(None, help="Layer whose down projection is trained (default: the recipe's "
                                                "deepest layer)."),
    rank: int = typer.Option(64, help="Rank of the weight update (0: full)."),
    n_prompts: int = typer.Option(40, help="Bundled neutral prompts to train on (the first N)."),
    reply_tokens: int = typer.Option(24, help="Steered reply tokens appended to each training prompt."),
    force: bool = typer.Option(False, "--force", help="Replace --out if it is an earlier steerlab checkpoint."),
    model: str = MODEL, dtype: str | None = DTYPE, device: str = DEVICE,
) -> None:
    """Train one layer's MLP down projection so the plain model behaves like the hook-steered one (CASAL-style).

    Works for recipes `steerlab bake` refuses (Rotate, norm-matched Add, Conditional, controller). The result
    loads with AutoModelForCausalLM.from_pretrained and needs no hooks.

    Example:  steerlab amortize --recipe happy.steer --out smollm2-happy/ --rank 64
    """
    import steerlab as sl

    from .. import io
    from ..edit.amortize import is_steerlab_checkpoint

    common.check_count(n_prompts, "--n-prompts")
    common.check_count(reply_tokens, "--reply-tokens", low=0)
    common.check_count(rank, "--rank", low=0)
    io.check_owned(out, is_steerlab_checkpoint, force, "amortized checkpoint", "--force")
    steering = sl.Steering.load(recipe)
    m = common.load_model(model, dtype, device)
    steering.check_model(m.fingerprint)
    prompts = sl.data.neutral_prompts()[:n_prompts]
    with common.err.status("generating steered replies and fitting ..."):
        texts = (sl.edit.with_replies(m, steering, prompts, reply_tokens) if reply_tokens else prompts)
        result = sl.edit.amortize(m, steering, texts, layer=layer, rank=rank or None)
    io.replace_folder(out, lambda tmp: result.model.save_pretrained(str(tmp)), ours=is_steerlab_checkpoint,
                      overwrite=force, what="amortized checkpoint", flag="--force")
    typer.echo(f"trained layer {result.layer}'s down projection (rank {rank or 'full'}) on {result.fit['tokens']} "
               f"tokens; relative error {result.fit['relative_error']:.3f} -> {out}")
    typer.echo(f"load it with: AutoModelForCausalLM.from_pretrained({str(out)!r})")


COMMANDS: dict[str, Callable[..., Any]] = {"controller": controller, "grains": grains, "amortize": amortize}


def register(app: typer.Typer) -> None:
    """Add the learned-steering commands to ``app``."""
    common.add_commands(app, COMMANDS)
