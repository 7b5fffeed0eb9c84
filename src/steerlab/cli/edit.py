"""``steerlab bake`` and ``steerlab export``: a recipe into weights, a direction into a llama.cpp control vector."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from . import common
from .common import DEVICE, DTYPE, LAYERS_HELP, MODEL, err, layer_spec, parse_layers


def bake(
    model: str = MODEL,
    recipe: Path = typer.Option(..., "--recipe", "-r", help="A Steering folder (.steer), e.g. from `steerlab steer --save-recipe`."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the baked checkpoint (model + tokenizer)."),
    dtype: str | None = DTYPE,
    device: str = DEVICE,
    verify: bool = typer.Option(True, help="Check the baked model against hook steering on two probe texts."),
    force: bool = typer.Option(False, "--force", help="Replace an earlier baked checkpoint at --out (a folder that "
                                                      "is not a steerlab-baked checkpoint is never replaced)."),
) -> None:
    """Fold a steering recipe into the weights: a checkpoint any engine serves, with the same outputs.

    Example:  steerlab bake --model smollm2 --recipe refusal.steer --out smollm2-baked/
    """
    import steerlab as sl

    from .. import io

    io.check_owned(out, _is_baked, force, "baked checkpoint", "--force")  # before the model loads
    steering = sl.Steering.load(recipe)
    m = common.load_model(model, dtype, device)
    steering.check_model(m.fingerprint)
    with err.status(f"baking {recipe} into {model} ..."):
        baked = sl.edit.bake(m, steering, verify=verify)
        io.replace_folder(out, lambda tmp: baked.save_pretrained(str(tmp)), ours=_is_baked, overwrite=force,
                          what="baked checkpoint", flag="--force")
    info = dict(baked.config.steerlab)
    edits, switches = info.get("edits", {}), info.get("switches", [])
    typer.echo(f"baked {len(edits)} writers -> {out}")
    for writer, sources in edits.items():
        typer.echo(f"  {writer}: {', '.join(sources)}")
    if switches:
        typer.echo(f"  config switches turned on: {', '.join(switches)} (unused biases are zero)")
    if info.get("untied", False):
        typer.echo("  input and output embeddings untied (the unembedding keeps the original weights)")
    typer.echo(f"load it with: AutoModelForCausalLM.from_pretrained({str(out)!r})")


def _is_baked(path: Path) -> bool:
    """Whether ``path`` is a checkpoint written by ``steerlab bake`` (its config records the bake)."""
    import json

    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return path.is_dir() and isinstance(config, dict) and isinstance(config.get("steerlab"), dict)


def export(
    direction: Path = typer.Option(..., "--direction", "-d", help="A Direction folder from `steerlab extract`."),
    gguf: Path = typer.Option(..., "--gguf", help="Output .gguf file (llama.cpp control vector)."),
    layers: str | None = typer.Option(None, help=f"Layers to write (default and all: every layer held but 0, which "
                                                 f"llama.cpp never steers): {LAYERS_HELP}."),
    alpha: float = typer.Option(1.0, help="Strength baked into the vectors (llama.cpp can scale again)."),
    model_hint: str | None = typer.Option(None, help="controlvector.model_hint (default: the model family)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing .gguf control vector at --gguf."),
) -> None:
    """Write a direction as a llama.cpp control vector (direction.N is added to block N's output).

    Example:  steerlab export --direction happy.direction --gguf happy.gguf --layers 8-12 --alpha 4
    Then:     llama-cli -m model.gguf --control-vector happy.gguf
    """
    import steerlab as sl

    common.check_number(alpha, "--alpha", -1e4, 1e4)
    d = sl.Direction.load(direction)
    # no model here: layers are checked against the direction's (negatives count from its model's end)
    n_layers = (d.meta.get("model") or {}).get("n_layers")
    chosen = parse_layers(layers, n_layers, held=d.layers)
    if layer_spec(layers) == "all":
        chosen = None   # every layer a control vector can hold: all held but 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = d.to_gguf(gguf, layers=chosen, alpha=alpha, model_hint=model_hint, overwrite=force)
    for w in caught:   # steerlab's own notes (layer 0 left out, another site) as one line each
        if issubclass(w.category, UserWarning):
            err.print(f"[yellow]note:[/] {escape(str(w.message))}", highlight=False, soft_wrap=True)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    typer.echo(f"control vector -> {path}")


COMMANDS: dict[str, Callable[..., Any]] = {"bake": bake, "export": export}


def register(app: typer.Typer) -> None:
    """Add ``bake`` and ``export`` to ``app``."""
    common.add_commands(app, COMMANDS)
