"""`steerlab bake` and `steerlab export`: typer commands over ``steerlab.edit.commands``.

The main CLI calls ``register(app)``. Bad input exits with code 2 and one line, never a traceback.
"""

from __future__ import annotations

import functools
from pathlib import Path

import typer


def _one_line_errors(fn):
    """steerlab's input errors and missing files become one line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from .errors import SteerlabError

        try:
            return fn(*args, **kwargs)
        except SteerlabError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2)
        except FileNotFoundError as e:
            typer.echo(f"error: file not found: {e.filename or e}", err=True)
            raise typer.Exit(2)

    return wrapper


def bake(
    model: str = typer.Option("smollm2", "--model", "-m", help="'smollm2' (embedded), a folder, a .gguf file or a hub id."),
    recipe: Path = typer.Option(..., "--recipe", "-r", help="A Steering folder (.steer), e.g. from `steerlab steer --save-recipe`."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the baked checkpoint (model + tokenizer)."),
    dtype: str | None = typer.Option(None, help="float32 (CPU default), bfloat16 or float16."),
    device: str = typer.Option("auto", help="cpu, cuda or auto."),
    verify: bool = typer.Option(True, help="Check the baked model against hook steering on two probe texts."),
    force: bool = typer.Option(False, help="Write into --out even if it is not empty."),
):
    """Fold a steering recipe into the weights: a checkpoint any engine serves, with the same outputs.

    Example:  steerlab bake --model smollm2 --recipe refusal.steer --out smollm2-baked/
    """
    from rich.console import Console

    from .edit.commands import cli_bake

    with Console(stderr=True).status(f"baking {recipe} into {model} ..."):
        summary = cli_bake(model, recipe, out, dtype=dtype, device=device, verify=verify, force=force)
    typer.echo(f"baked {len(summary['edits'])} writers -> {summary['out']}")
    for writer, sources in summary["edits"].items():
        typer.echo(f"  {writer}: {', '.join(sources)}")
    if summary["switches"]:
        typer.echo(f"  config switches turned on: {', '.join(summary['switches'])} (unused biases are zero)")
    if summary["untied"]:
        typer.echo("  input and output embeddings untied (the unembedding keeps the original weights)")
    typer.echo(f"load it with: AutoModelForCausalLM.from_pretrained({summary['out']!r})")


def export(
    direction: Path = typer.Option(..., "--direction", "-d", help="A Direction folder from `steerlab extract`."),
    gguf: Path = typer.Option(..., "--gguf", help="Output .gguf file (llama.cpp control vector)."),
    layers: str | None = typer.Option(None, help="Layers to write, e.g. 8-12 (default: all held but 0)."),
    alpha: float = typer.Option(1.0, help="Strength baked into the vectors (llama.cpp can scale again)."),
    model_hint: str | None = typer.Option(None, help="controlvector.model_hint (default: the model family)."),
):
    """Write a direction as a llama.cpp control vector (direction.N is added to block N's output).

    Example:  steerlab export --direction happy.direction --gguf happy.gguf --layers 8-12 --alpha 4
    Then:     llama-cli -m model.gguf --control-vector happy.gguf
    """
    from .edit.commands import cli_export

    path = cli_export(direction, gguf, layers=layers, alpha=alpha, model_hint=model_hint)
    typer.echo(f"control vector -> {path}")


def register(app: typer.Typer) -> None:
    """Add the `bake` and `export` commands to the main app."""
    app.command("bake")(_one_line_errors(bake))
    app.command("export")(_one_line_errors(export))
