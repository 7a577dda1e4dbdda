"""The `keel` command: one Typer app with a sub-command per capability."""

from __future__ import annotations

import typer

import keel
from keel.cli import config, models
from keel.cli.chat import chat
from keel.cli.serve import serve

app = typer.Typer(
    help="Keel: an LLMOps platform around an OpenAI-compatible gateway.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command()(serve)
app.command()(chat)
app.add_typer(models.app, name="models")
app.add_typer(config.app, name="config")


@app.command()
def version() -> None:
    """Print Keel's version."""
    typer.echo(f"keel {keel.__version__}")


def main() -> None:
    app()
