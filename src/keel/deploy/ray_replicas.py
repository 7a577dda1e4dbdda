"""Model replicas as Ray actors (`keel deploy NAME --replicas N --on ray`): each actor runs
one supervised llama.cpp server on whichever node Ray places it, and Ray restarts an actor
that dies. `RayLlamaServer` is the gateway's handle on one such actor, with the surface of a
local `LlamaCppServer`, so a deployment's pool routes to both kinds alike.

Ray is imported only when a deployment asks for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from keel.deploy.crashes import CrashHistory
from keel.deploy.llamacpp import LlamaServerConfig, ModelServerFailed, State
from keel.ray_link import join

log = logging.getLogger("keel.deploy")

POLL_SECONDS = 0.5  # how soon a dead or restarted actor is seen by the gateway
_INSTALL = "pip install 'keel[ray]' (or pip install 'ray>=2.40')"


def connect_ray(address: str | None) -> Any:
    """Ray, connected to the cluster at `address` (once per process)."""
    if not address:
        raise ModelServerFailed(
            "a deployment --on ray needs a Ray cluster: set KEEL_RAY_ADDRESS (auto, host:port "
            "or ray://host:10001) and restart Keel, or deploy without --on ray"
        )
    try:
        import ray
    except ImportError:
        raise ModelServerFailed(f"a deployment --on ray needs Ray; {_INSTALL}") from None
    if not ray.is_initialized():
        join(ray, address)
    return ray


class LlamaActor:
    """Runs on a Ray worker: one supervised llama.cpp server, started on the first call after
    the actor (re)starts, listening on the node's address."""

    def __init__(self, settings: dict[str, Any]):
        self.settings = settings
        self.server: Any = None
        self._start: asyncio.Task[None] | None = None

    async def status(self) -> dict[str, Any]:
        if self.server is None:
            import ray

            from keel.deploy.llamacpp import LlamaCppServer

            host: str = ray.util.get_node_ip_address()  # type: ignore[no-untyped-call]
            config = LlamaServerConfig(host=host, **self._config())
            self.server = LlamaCppServer(config)
            self._start = asyncio.create_task(self._run())
        server = self.server
        return {
            "url": server.base_url,
            "state": server.state,
            "pid": server.pid,
            "port": server.port,
            "actor_pid": os.getpid(),
        }

    def _config(self) -> dict[str, Any]:
        given = dict(self.settings)
        given["model_path"] = Path(given["model_path"])
        given["log_path"] = Path(given["log_path"])
        return given

    async def _run(self) -> None:
        try:
            await self.server.start()
        except ModelServerFailed as error:  # its supervisor keeps retrying
            log.error("%s", error)

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()


class RayLlamaServer:
    """The gateway's side of one replica actor: its state and address, read every
    POLL_SECONDS. `on_url` is told each new address (a restarted actor listens elsewhere)."""

    def __init__(
        self,
        config: LlamaServerConfig,
        address: str | None,
        on_url: Callable[[str], None],
        name: str,
    ):
        self.config = config
        self.address = address
        self.on_url = on_url
        self.name = name
        self.state: State = "stopped"
        self.restarts = 0
        self.crashes = CrashHistory(config.restart)
        self.next_restart_at: float | None = None
        self.port: int | None = None
        self.pid: int | None = None
        self.base_url = ""
        self._actor_pid: int | None = None
        self._ray: Any = None
        self._actor: Any = None
        self._poller: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    async def start(self) -> None:
        """Create the actor and wait for its server's first ready, as a local start does."""
        self.state = "starting"
        ray = self._ray = await asyncio.to_thread(connect_ray, self.address)
        settings = {
            "model_path": str(self.config.model_path),
            "model_alias": self.config.model_alias,
            "log_path": str(self.config.log_path),
            "n_ctx": self.config.n_ctx,
            "n_threads": self.config.n_threads,
            "ready_timeout": self.config.ready_timeout,
        }
        self._actor = (
            ray.remote(LlamaActor)
            .options(
                num_cpus=1,
                max_restarts=-1,  # Ray brings a dead replica back, on this node or another
                max_task_retries=-1,  # status calls are safe to repeat
                max_concurrency=4,
                scheduling_strategy="SPREAD",
            )
            .remote(settings)
        )
        self._poller = asyncio.create_task(self._poll(), name=f"ray-replica-{self.name}")
        try:
            await asyncio.wait_for(self._ready.wait(), self.config.ready_timeout)
        except TimeoutError:
            raise ModelServerFailed(
                f"Ray replica {self.name} is not ready after {self.config.ready_timeout:.0f}s "
                f"(state {self.state}); see its log {self.config.log_path} on the Ray node"
            ) from None

    async def _poll(self) -> None:
        dead = (self._ray.exceptions.RayActorError, self._ray.exceptions.ActorUnavailableError)
        while True:
            try:
                status = await asyncio.wait_for(self._actor.status.remote(), 30)
            except (*dead, TimeoutError) as error:
                if self.state == "ready":
                    log.warning("Ray replica %s is down (%s); Ray restarts it", self.name, error)
                self.state = "restarting"
                await asyncio.sleep(POLL_SECONDS)
                continue
            if self._actor_pid is not None and status["actor_pid"] != self._actor_pid:
                self.restarts += 1
            self._actor_pid = status["actor_pid"]
            self.pid, self.port = status["pid"], status["port"]
            if status["url"] != self.base_url:
                self.base_url = status["url"]
                self.on_url(self.base_url)
            self.state = status["state"]
            if self.state == "ready":
                self._ready.set()
            await asyncio.sleep(POLL_SECONDS)

    async def stop(self) -> None:
        poller, self._poller = self._poller, None
        if poller is not None:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
        if self._actor is not None and self._ray is not None:
            with contextlib.suppress(Exception):  # an actor already gone is stopped
                await asyncio.wait_for(self._actor.stop.remote(), 10)
            self._ray.kill(self._actor, no_restart=True)
            self._actor = None
        self.state = "stopped"
