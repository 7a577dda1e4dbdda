"""Local deployments: keep N supervised llama.cpp replicas running per deployed model version.

`reconcile()` makes the running set match the registry: it starts missing replicas (in
the background, so routing tables swap at once), stops surplus ones and whole pools
that were undeployed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keel.deploy.bundled import smollm2_gguf
from keel.deploy.crashes import Crash, RestartPolicy
from keel.deploy.llamacpp import (
    LLAMA_CPP_SERVER,
    LlamaCppServer,
    LlamaServerConfig,
    ModelServerFailed,
)
from keel.deploy.pool import Replica, ReplicaPool
from keel.deploy.ray_replicas import RayLlamaServer
from keel.deploy.tokens import GGUFTokenCounter
from keel.providers import builtin
from keel.providers.base import Provider
from keel.providers.plugins import ProviderConfig, ProviderFactory

log = logging.getLogger("keel.deploy")

BUNDLED = {"bundled:smollm2": smollm2_gguf}


def resolve_model_path(value: str) -> Path:
    """A GGUF path, or `bundled:smollm2` for the model that ships with Keel."""
    if value in BUNDLED:
        return BUNDLED[value]()
    return Path(value).expanduser()


@dataclass(frozen=True)
class Wanted:
    """One deployment as the registry wants it."""

    project_id: str
    ref: str
    model_path: Path
    upstream_model: str
    replicas: int
    on: str = "local"  # local child processes, or Ray actors (ray_replicas.py)


@dataclass(frozen=True)
class ServerOptions:
    data_dir: Path
    n_ctx: int = 2048
    n_threads: int = 0
    ready_timeout: float = 120.0
    connect_timeout: float = 5.0
    read_timeout: float = 600.0
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    logs_kept: int = 5
    launcher: tuple[str, ...] = LLAMA_CPP_SERVER
    ray_address: str | None = None  # the cluster of deployments --on ray


class DeploymentManager:
    def __init__(
        self,
        options: ServerOptions,
        progress: Callable[[str], None] | None = None,
        *,
        replica_client: ProviderFactory = builtin.openai_compat,
    ):
        """`replica_client`: the factory of each replica's client. A deployment is a pool of
        supervised servers, not a provider kind of its own; llama.cpp's server speaks the
        OpenAI API, so the `openai_compat` plugin's factory talks to each replica."""
        self.options = options
        self._progress = progress
        self._replica_client = replica_client
        self._pools: dict[tuple[str, str], ReplicaPool] = {}
        self._paths: dict[tuple[str, str], Path] = {}
        self._placement: dict[tuple[str, str], str] = {}
        self._starting: set[asyncio.Task[None]] = set()
        # Per (project, ref), for the lifetime of this process: a Prometheus counter must
        # not go down when a pool is rescaled or redeployed.
        self._crash_totals: dict[tuple[str, str], int] = {}

    def pool(self, project_id: str, ref: str) -> ReplicaPool | None:
        return self._pools.get((project_id, ref))

    def _new_replica(self, want: Wanted, index: int, counter: GGUFTokenCounter) -> Replica:
        safe = want.ref.replace("@", "-")
        config = LlamaServerConfig(
            model_path=want.model_path,
            model_alias=want.upstream_model,
            log_path=self.options.data_dir / "logs" / f"llama-{safe}-{index}.log",
            n_ctx=self.options.n_ctx,
            n_threads=self.options.n_threads,
            ready_timeout=self.options.ready_timeout,
            restart=self.options.restart,
            logs_kept=self.options.logs_kept,
            launcher=self.options.launcher,
        )

        def client_for(base_url: str) -> Provider:
            return self._replica_client(
                ProviderConfig(
                    name=f"{want.ref}#{index}",
                    base_url=base_url,
                    connect_timeout=self.options.connect_timeout,
                    read_timeout=self.options.read_timeout,
                    token_counter=counter,
                )
            )

        if want.on == "ray":
            # A Ray actor's server listens wherever Ray placed it, and elsewhere after a
            # restart: the replica's client follows its address.
            def moved(base_url: str) -> None:
                old, replica.client = replica.client, client_for(base_url)
                closing = asyncio.get_running_loop().create_task(old.close())
                self._starting.add(closing)  # held until done, like start-up tasks
                closing.add_done_callback(self._starting.discard)

            ray_server = RayLlamaServer(config, self.options.ray_address, moved, f"{safe}-{index}")
            replica = Replica(ray_server, client_for("http://127.0.0.1:9/v1"))  # type: ignore[arg-type]
            return replica
        server = LlamaCppServer(
            config,
            progress=self._progress,
            on_crash=lambda crash: self._count_crash((want.project_id, want.ref), crash),
        )
        return Replica(server, client_for(server.base_url))

    def _count_crash(self, key: tuple[str, str], crash: Crash) -> None:
        self._crash_totals[key] = self._crash_totals.get(key, 0) + 1

    async def _start(self, replica: Replica) -> None:
        try:
            await replica.server.start()
        except ModelServerFailed as exc:  # its supervisor keeps retrying; /readyz shows it
            log.error("%s", exc)

    def _spawn(self, replica: Replica) -> asyncio.Task[None]:
        task = asyncio.create_task(self._start(replica))
        self._starting.add(task)
        task.add_done_callback(self._starting.discard)
        return task

    async def reconcile(self, wanted: list[Wanted]) -> list[asyncio.Task[None]]:
        """Match running replicas to `wanted`; returns the start-up tasks it began."""
        started: list[asyncio.Task[None]] = []
        keep = {(w.project_id, w.ref) for w in wanted}
        for key in [k for k in self._pools if k not in keep]:
            await self._stop_pool(key)
        for want in wanted:
            key = (want.project_id, want.ref)
            if key in self._pools and self._paths[key] != want.model_path:
                await self._stop_pool(key)
            if key in self._pools and self._placement.get(key, "local") != want.on:
                await self._stop_pool(key)  # moved to or from Ray: new replicas there
            pool = self._pools.get(key)
            if pool is None:
                pool = ReplicaPool(want.ref, [])
                self._pools[key] = pool
                self._paths[key] = want.model_path
                self._placement[key] = want.on
            counter = GGUFTokenCounter(want.model_path)
            while len(pool.replicas) < want.replicas:
                replica = self._new_replica(want, len(pool.replicas), counter)
                pool.replicas.append(replica)
                started.append(self._spawn(replica))
            while len(pool.replicas) > want.replicas:
                surplus = pool.replicas.pop()
                await surplus.client.close()
                await surplus.server.stop()
        return started

    async def _stop_pool(self, key: tuple[str, str]) -> None:
        pool = self._pools.pop(key)
        self._paths.pop(key, None)
        self._placement.pop(key, None)
        await pool.close()
        for replica in pool.replicas:
            await replica.server.stop()

    async def stop_all(self) -> None:
        for task in list(self._starting):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for key in list(self._pools):
            await self._stop_pool(key)

    def status(self, project_id: str | None = None) -> list[dict[str, Any]]:
        return [
            {"project_id": project, "model": ref, "replicas": pool.status(),
             "ready": sum(1 for r in pool.replicas if r.server.ready), "state": pool.state(),
             "last_crash": pool.last_crash()}
            for (project, ref), pool in sorted(self._pools.items())
            if project_id is None or project == project_id
        ]  # fmt: skip

    def readiness(self) -> dict[str, dict[str, object]]:
        checks: dict[str, dict[str, object]] = {}
        for (_, ref), pool in sorted(self._pools.items()):
            ready = sum(1 for r in pool.replicas if r.server.ready)
            checks[f"deployment:{ref}"] = {
                "ready": ready > 0,
                "state": pool.state(),
                "replicas_ready": ready,
                "replicas": len(pool.replicas),
                "states": [r.server.state for r in pool.replicas],
                "restarts": sum(r.server.restarts for r in pool.replicas),
                "crashes": sum(r.server.crashes.total for r in pool.replicas),
                "next_restart_at": min(
                    (r.server.next_restart_at for r in pool.replicas
                     if r.server.next_restart_at is not None), default=None,
                ),
                "last_crash": pool.last_crash(),
            }  # fmt: skip
        return checks

    def crash_totals(self) -> dict[tuple[str, str], int]:
        """Crashes per (project, deployment) since this process started."""
        return dict(self._crash_totals)

    def replica_states(self) -> list[tuple[str, str, int, str]]:
        """(project, deployment, replica index, state) of every replica."""
        return [
            (project, ref, index, replica.server.state)
            for (project, ref), pool in sorted(self._pools.items())
            for index, replica in enumerate(pool.replicas)
        ]
