"""Apply keel.yaml's declarations when the gateway starts (`keel serve -c keel.yaml`).

The same code path as `keel apply`: the file is checked, planned and applied through this
app's own /api (in process, before the first client is served), so a second start with
the same file changes nothing and every change has its audit record.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
from pathlib import Path
from typing import TextIO

import httpx
from fastapi import FastAPI

from keel.auth.keys import DEFAULT_PROJECT, Principal
from keel.gitops.api import KeelAPI
from keel.gitops.apply import ApplyError, Outcome, apply_paths
from keel.server.deps import authenticate
from keel.server.services import Progress, Services

log = logging.getLogger("keel.server")

# Who the audit log says made the changes: the file, not a person's key.
ACTOR = Principal(key_id="keel.yaml", project_id=DEFAULT_PROJECT, role="admin")


class DeclarationsFailed(Exception):
    """keel.yaml's declarations cannot be applied; nothing was changed."""


async def apply_at_start(
    app: FastAPI, services: Services, path: Path, progress: Progress | None = None
) -> list[Outcome]:
    """Apply `path` to the default project; DeclarationsFailed (problems logged) if it is wrong.

    Call it in the lifespan, after services started and before the server accepts
    connections: until then, no request can see the temporary in-process identity.
    """
    lock = await asyncio.to_thread(_lock, services.settings.data_dir)
    app.dependency_overrides[authenticate] = lambda: ACTOR
    # The in-process calls would each log an httpx line: the outcomes below say what changed.
    client_log = logging.getLogger("httpx")
    level = client_log.level
    client_log.setLevel(logging.WARNING)
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://keel") as client:
            outcomes = await apply_paths([path], KeelAPI(client))
    except ApplyError as exc:
        for problem in exc.problems:
            log.error("%s", problem)
        raise DeclarationsFailed(
            f"{path}: {len(exc.problems)} problem(s) in the declarations (above); nothing "
            "was changed. Fix the file and start again, or check it first with "
            f"'keel apply -f {path} --dry-run' against a running Keel"
        ) from exc
    finally:
        app.dependency_overrides.pop(authenticate, None)
        client_log.setLevel(level)
        lock.close()  # releases the lock
    changed = [o for o in outcomes if o.changed]
    for outcome in changed:
        log.info("keel.yaml: %s", outcome)
    if changed:  # the first request must see the new routes, not the change event's refresh
        await asyncio.gather(*await services.sync.refresh())
    summary = f"{len(changed)} change(s)" if changed else "no changes"
    if progress is not None:
        progress(f"applied the declarations of {path}: {summary}")
    return outcomes


def _lock(data_dir: Path) -> TextIO:
    """Worker processes of one `keel serve --workers N` apply one after another."""
    handle = (data_dir / "apply.lock").open("a")
    fcntl.flock(handle, fcntl.LOCK_EX)
    return handle
