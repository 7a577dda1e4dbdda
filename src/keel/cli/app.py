"""The `keel` command: one Typer app with a sub-command per capability."""

from __future__ import annotations

import typer

import keel
from keel.cli import (
    audit,
    cache,
    config,
    deployments,
    evals,
    finetune,
    guard,
    insights,
    jobs,
    kb,
    keys,
    models,
    projects,
    prompts,
    providers,
    routes,
    traces,
    users,
    workflows,
)
from keel.cli.apply import apply
from keel.cli.chat import chat
from keel.cli.export import export
from keel.cli.serve import serve
from keel.cli.worker import worker

app = typer.Typer(
    help="Keel: an LLMOps platform around an OpenAI-compatible gateway.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command()(serve)
app.command()(worker)
app.command()(chat)
app.add_typer(models.app, name="models")
app.add_typer(providers.app, name="providers")
app.add_typer(routes.app, name="routes")
app.add_typer(deployments.app, name="deployments")
app.command()(deployments.deploy)
app.command()(deployments.undeploy)
app.add_typer(traces.app, name="traces")
app.command()(traces.stats)
app.add_typer(prompts.app, name="prompts")
app.command()(apply)
app.command()(export)
app.add_typer(config.app, name="config")
app.add_typer(projects.app, name="projects")
app.add_typer(users.app, name="users")
app.add_typer(keys.app, name="keys")
app.add_typer(audit.app, name="audit")
app.add_typer(cache.app, name="cache")
app.add_typer(guard.app, name="guard")
app.add_typer(kb.app, name="kb")
app.add_typer(jobs.app, name="jobs")
app.add_typer(insights.app, name="insights")
app.add_typer(workflows.app, name="workflows")
app.command("run")(workflows.run)
app.add_typer(evals.app, name="eval")
app.add_typer(finetune.app, name="finetune")


@app.command()
def version() -> None:
    """Print Keel's version."""
    typer.echo(f"keel {keel.__version__}")


def main() -> None:
    app()
