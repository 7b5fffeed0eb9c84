"""``steerlab ...``: a thin command line over the public API (typer + rich).

One module per command group; ``common`` holds what they share. Every command has ``--help`` with an
example, shows progress on long work, and on bad input prints one line and exits with code 2.
"""

from __future__ import annotations

import typer

from . import analysis, audit, audits, compare, core, edit, learned, refusal, sae, serve, transfer

app = typer.Typer(
    name="steerlab",
    help="Read, steer and audit what a language model computes from its hidden states.\n\n"
         "Start with: steerlab demo",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
for _group in (core, edit, analysis, compare, refusal, audit, serve, audits, transfer, sae, learned):
    _group.register(app)


def _version(value: bool) -> None:
    if value:
        from .. import __version__

        typer.echo(f"steerlab {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print steerlab's version and exit.")) -> None:
    """Read, steer and audit what a language model computes from its hidden states."""


def main() -> None:
    """Entry point of the `steerlab` console script."""
    app()


__all__ = ["app", "main"]
