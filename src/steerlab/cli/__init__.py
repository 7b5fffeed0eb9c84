"""``steerlab ...``: a thin command line over the public API (typer + rich).

One module per command group; ``common`` holds what they share. Every command has ``--help`` with an
example, shows progress on long work, and on bad input prints one line and exits with code 2.
"""

from __future__ import annotations

import typer

from . import analysis, compare, core, edit, serve

app = typer.Typer(
    name="steerlab",
    help="Read, steer and audit what a language model computes from its hidden states.\n\n"
         "Start with: steerlab demo",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
for _group in (core, edit, analysis, compare, serve):
    _group.register(app)


def main() -> None:
    """Entry point of the `steerlab` console script."""
    app()


__all__ = ["app", "main"]
