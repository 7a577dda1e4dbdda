"""`keel apply -f FILE|DIR`: apply keel.yaml's declarations to a running Keel."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from keel.cli.client import err, fail, resolve_target_and_source
from keel.gitops.api import ApiError, KeelAPI
from keel.gitops.apply import ApplyError, ApplyOptions, Outcome, apply_paths

out = Console(highlight=False, soft_wrap=True)


def run_apply(
    paths: Sequence[Path],
    url: str | None,
    key: str | None,
    config: Path | None,
    *,
    dry_run: bool = False,
    options: ApplyOptions | None = None,
) -> list[Outcome]:
    """Apply files against the Keel the CLI points at; problems end the command (exit 1)."""
    base, token, source = resolve_target_and_source(url, key, config)

    async def run() -> list[Outcome]:
        api = KeelAPI.connect(base, token, key_source=source)
        try:
            return await apply_paths(paths, api, dry_run=dry_run, options=options)
        finally:
            await api.close()

    try:
        return asyncio.run(run())
    except ApplyError as exc:
        for problem in exc.problems:
            err.print(f"[bold red]error:[/] {escape(str(problem))}")
        err.print("nothing was changed")
        raise typer.Exit(1) from exc
    except ApiError as exc:
        raise fail(escape(str(exc))) from exc


def apply(
    files: Annotated[
        list[Path],
        typer.Option("--file", "-f", help="A YAML file or a folder of them; repeat for more."),
    ],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what would change, and change nothing.")
    ] = False,
    prune: Annotated[
        bool,
        typer.Option(
            "--prune",
            help="Also remove what the server holds and the files no longer declare, in each "
            "section the files name. A model version that still gets traffic is refused.",
        ),
    ] = False,
    message: Annotated[
        str | None, typer.Option("--message", "-m", help="Commit message for new versions.")
    ] = None,
    url: Annotated[str | None, typer.Option(help="Keel base URL (default from settings).")] = None,
    key: Annotated[str | None, typer.Option(help="API key (default: the local admin key).")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="keel.yaml.")] = None,
) -> None:
    """Apply keel.yaml's declarations to a running Keel: only what differs from the server.

    Sections, applied in this order: providers (kind, base_url, `api_key: {$env: NAME}`,
    config), models (one entry per immutable version: the n-th entry of a name is
    version n), routes (targets with relative weights, sticky, fallbacks, timeout,
    retries, breaker_failures, breaker_cooldown), deployments (model, replicas) and
    prompts (or a file holding one prompt). Settings in the same file are skipped here:
    `keel serve -c keel.yaml` reads them, and applies the declarations at start.

    Everything is checked first, against the files and the server; on an error (file,
    line, field) nothing is changed. --dry-run prints the plan; --prune also removes what
    the files no longer declare (each removal is an audit record).
    """
    options = ApplyOptions(message=message, prune=prune)
    outcomes = run_apply(files, url, key, config, dry_run=dry_run, options=options)
    for outcome in outcomes:
        out.print(escape(str(outcome)))
    if not any(o.changed for o in outcomes):
        out.print("no changes")
    elif dry_run:
        out.print("dry run: nothing was changed")
