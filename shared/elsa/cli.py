"""The ``elsa`` command."""

from __future__ import annotations

import typer

app = typer.Typer(help="ELSA: split-LoRA fine-tuning across edge networks.", no_args_is_help=True)


@app.callback()
def _root() -> None:
    """ELSA command line."""


@app.command()
def version() -> None:
    """Print the ELSA version."""
    from elsa import __version__

    typer.echo(__version__)


def main() -> None:
    """Console-script entry point."""
    app()
