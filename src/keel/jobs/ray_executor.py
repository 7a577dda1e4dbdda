"""The Ray executor: the local executor's leases, group-committed item writes and retries,
with each batch line run by one of a pool of Ray actors instead of in this process.

This process keeps the job's lease and every store write: an item is committed `sent`
before its Ray call and `done` after it, so the guarantees of executor.py hold unchanged.
The actor posts the line, with a token signed for it, to a Keel server's item route, which
runs it through `Gateway.handle` as the batch's owner. Ray never retries a call
(max_task_retries=0): a line whose actor died is failed as interrupted, never sent twice.
Ray is imported only here, when KEEL_RAY_ADDRESS is set.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import orjson

from keel.jobs.batch import BatchKind
from keel.jobs.executor import ExecutorOptions, Finish, ItemFailed, JobKind, LocalExecutor
from keel.jobs.model import Item, Job
from keel.jobs.store import JobStore
from keel.jobs.tokens import ItemSigner

log = logging.getLogger("keel.jobs")

NAMESPACE = "keel"
_INSTALL = "pip install 'keel[ray]' (or pip install 'ray>=2.40')"


class RayMissing(RuntimeError):
    pass


class RayUnreachable(RuntimeError):
    pass


def import_ray() -> ModuleType:
    try:
        import ray
    except ImportError:
        raise RayMissing(
            f"KEEL_RAY_ADDRESS is set but Ray is not installed; {_INSTALL}, or unset "
            "KEEL_RAY_ADDRESS to run jobs in this process"
        ) from None
    return ray


def check_reachable(address: str) -> None:
    """Fail at once on a cluster address nothing listens on: ray.init would retry for
    minutes, holding up the start of Keel."""
    if address == "auto":
        return  # Ray finds the local cluster itself, and says at once when there is none
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=5):
            return
    except (OSError, ValueError) as error:
        raise RayUnreachable(
            f"nothing answers at KEEL_RAY_ADDRESS={address} ({error}); start the cluster "
            "(ray start --head), fix the address (auto, host:port or ray://host:10001), or "
            "unset KEEL_RAY_ADDRESS to run jobs in this process"
        ) from None


@dataclass(frozen=True, slots=True)
class RayOptions:
    address: str  # auto, host:port or ray://host:10001
    callback_url: str  # how the actors reach a Keel server's API
    actors: int = 2
    timeout: float = 600.0  # one line, end to end


def line_body(item: Item) -> bytes:
    """The exact bytes the actor posts, and the token signs."""
    return orjson.dumps({"custom_id": item.key, **item.payload})


class RayBatchKind:
    """The batch kind with its lines sent to Ray actors; the files are written here."""

    name = "batch"

    def __init__(self, inner: BatchKind, signer: ItemSigner, actors: list[Any], ray: ModuleType):
        self.inner = inner
        self.signer = signer
        self.actors = actors
        self._next = itertools.cycle(range(len(actors)))
        # Actors seen dead, until they answer again: no line is sent to them meanwhile.
        self._down: set[int] = set()
        self._probes: set[asyncio.Task[None]] = set()
        self._dead = (
            ray.exceptions.RayActorError,
            ray.exceptions.ActorUnavailableError,
            ray.exceptions.WorkerCrashedError,
            ray.exceptions.ObjectLostError,
        )

    async def run_item(self, job: Job, item: Item) -> dict[str, Any]:
        body = line_body(item)
        token = self.signer.sign(job.id, item.id, job.key_id, body)
        index = self._pick()
        actor = self.actors[index]
        try:
            answer: dict[str, Any] = await actor.run.remote(job.id, item.id, token, body)
        except self._dead as error:
            self._mark_down(index)
            # The call may have reached the gateway and the upstream: never send it again.
            raise ItemFailed(
                {
                    "code": "interrupted",
                    "message": f"the Ray actor running this line died ({type(error).__name__}); "
                    "the line may have reached the upstream, so it is not sent again; "
                    "resubmit it",
                }
            ) from None
        if answer.get("ok"):
            result: dict[str, Any] = answer["result"]
            return result
        raise ItemFailed.from_dict(answer)

    async def finish(self, job: Job, cancelled: bool) -> Finish:
        return await self.inner.finish(job, cancelled)

    def _pick(self) -> int:
        """The next actor in turn that is not known to be down (any, when all are)."""
        for _ in range(len(self.actors)):
            index = next(self._next)
            if index not in self._down:
                return index
        return next(self._next)

    def _mark_down(self, index: int) -> None:
        if index in self._down:
            return
        self._down.add(index)
        probe = asyncio.create_task(self._until_back(index))
        self._probes.add(probe)
        probe.add_done_callback(self._probes.discard)

    async def _until_back(self, index: int) -> None:
        """Ray restarts the actor; it takes lines again once it answers."""
        while True:
            try:
                await asyncio.wait_for(self.actors[index].pid.remote(), 10)
            except (*self._dead, TimeoutError):
                await asyncio.sleep(0.2)
                continue
            except IndexError:  # the executor stopped and dropped its actors
                return
            self._down.discard(index)
            return


class RayExecutor(LocalExecutor):
    """Connects to the Ray cluster at start, runs a pool of ItemCaller actors (restarted by
    Ray when they die), and kills them at stop."""

    def __init__(
        self,
        store: JobStore,
        batch: BatchKind,
        signer: ItemSigner,
        ray_options: RayOptions,
        options: ExecutorOptions | None = None,
        *,
        on_item: Callable[[Job, bool], None] | None = None,
    ):
        kinds: dict[str, JobKind] = {}  # filled at start, once the actors exist
        super().__init__(store, kinds, options, on_item=on_item)
        self.batch = batch
        self.signer = signer
        self.ray_options = ray_options
        self._actors: list[Any] = []
        self._ray: ModuleType | None = None

    async def start(self) -> None:
        if self._ray is None:
            ray = import_ray()
            await asyncio.to_thread(self._connect, ray)
            self._ray = ray
            self.kinds["batch"] = RayBatchKind(self.batch, self.signer, self._actors, ray)
        await super().start()

    def _connect(self, ray: ModuleType) -> None:
        from keel.jobs.ray_caller import ItemCaller

        if not ray.is_initialized():
            check_reachable(self.ray_options.address)
            try:
                ray.init(
                    address=self.ray_options.address,
                    namespace=NAMESPACE,
                    log_to_driver=False,
                    logging_level=logging.WARNING,
                )
            except (ConnectionError, RuntimeError) as error:
                raise RayUnreachable(
                    f"could not join the Ray cluster at KEEL_RAY_ADDRESS="
                    f"{self.ray_options.address} ({error}); start it (ray start --head), fix "
                    "the address, or unset KEEL_RAY_ADDRESS to run jobs in this process"
                ) from error
        per_actor = max(1, -(-self.options.concurrency // self.ray_options.actors))
        caller = ray.remote(ItemCaller).options(
            num_cpus=0,  # waits on HTTP: takes no CPU from Ray's other work
            max_concurrency=per_actor,
            max_restarts=-1,  # Ray brings a dead actor back
            max_task_retries=0,  # ... but never re-runs a call it was running
            scheduling_strategy="SPREAD",
        )
        self._actors[:] = [
            caller.remote(self.ray_options.callback_url, self.ray_options.timeout)
            for _ in range(self.ray_options.actors)
        ]
        log.info(
            "jobs: running batch lines on %d Ray actors at %s, calling back %s",
            len(self._actors),
            self.ray_options.address,
            self.ray_options.callback_url,
        )

    async def stop(self) -> None:
        await super().stop()
        ray = self._ray
        if ray is not None:
            for actor in self._actors:
                ray.kill(actor)
            self._actors.clear()
            self.kinds.clear()
            self._ray = None
