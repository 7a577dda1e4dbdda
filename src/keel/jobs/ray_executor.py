"""The Ray executor: the local executor's leases, group-committed item writes and retries,
with each batch line, and each experiment item, run by one of a pool of Ray actors instead
of in this process.

This process keeps the job's lease and every store write: an item is committed `sent`
before its Ray call and `done` after it, so the guarantees of executor.py hold unchanged.
The actor posts the item, with a token signed for it, to a Keel server's item route, which
runs it through `Gateway.handle` as the job's owner. Ray never retries a call
(max_task_retries=0): an item whose actor died is failed as interrupted, never sent twice.
Ray is imported only here, when KEEL_RAY_ADDRESS is set.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
import threading
from collections import Counter
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
from keel.ray_link import join

log = logging.getLogger("keel.jobs")

# Kinds whose item is one call through `Gateway.handle` and work on its answer (an
# experiment scores it): their items run on the actors, through POST /v1/jobs/…/run.
ON_RAY = frozenset({"experiment"})
_CONNECTING = threading.Lock()
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
    """The exact bytes the actor posts for a batch line, and the token signs."""
    return orjson.dumps({"custom_id": item.key, **item.payload})


def item_body(item: Item) -> bytes:
    """The exact bytes the actor posts for an item of another kind, and the token signs."""
    return orjson.dumps(
        {"key": item.key, "ordinal": item.ordinal, "attempts": item.attempts,
         "payload": item.payload}
    )  # fmt: skip


def item_from_body(job_id: str, item_id: int, body: bytes) -> Item:
    """The item an actor posted (item_body's bytes), as the kind's run_item takes it."""
    data = orjson.loads(body)
    return Item(
        id=item_id,
        job_id=job_id,
        ordinal=int(data["ordinal"]),
        key=str(data["key"]),
        payload=dict(data["payload"]),
        state="sent",
        attempts=int(data["attempts"]),
    )


def item_path(job: Job, item: Item) -> str:
    return f"/v1/jobs/{job.id}/items/{item.id}/run"


def line_path(job: Job, item: Item) -> str:
    return f"/v1/batches/{job.id}/items/{item.id}/run"


class ActorPool:
    """The ItemCaller actors, taken in turn; one seen dead gets no item until it answers
    again (Ray restarts it)."""

    def __init__(self, actors: list[Any], ray: ModuleType):
        self.actors = actors
        self._next = itertools.cycle(range(len(actors)))
        self._down: set[int] = set()
        self._probes: set[asyncio.Task[None]] = set()
        self._dead = (
            ray.exceptions.RayActorError,
            ray.exceptions.ActorUnavailableError,
            ray.exceptions.WorkerCrashedError,
            ray.exceptions.ObjectLostError,
        )

    async def call(self, path: str, token: str, body: bytes) -> dict[str, Any]:
        """The item's result, or ItemFailed: as the Keel route answered, or `interrupted`
        when the actor died with the call in flight."""
        index = self._pick()
        try:
            answer: dict[str, Any] = await self.actors[index].run.remote(path, token, body)
        except self._dead as error:
            self._mark_down(index)
            # The call may have reached the gateway and the upstream: never send it again.
            raise ItemFailed(
                {
                    "code": "interrupted",
                    "message": f"the Ray actor running this item died ({type(error).__name__}); "
                    "it may have reached the upstream, so it is not sent again; resubmit it",
                }
            ) from None
        if answer.get("ok"):
            result: dict[str, Any] = answer["result"]
            return result
        raise ItemFailed.from_dict(answer)

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
        """Ray restarts the actor; it takes items again once it answers."""
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


class RayKind:
    """A kind whose items run on the Ray actors: each actor posts the item, with a token
    signed for it, to a Keel route that runs it through the kind there (so through
    `Gateway.handle`) and answers its result, which this process records. The job ends here
    (`finish` is the kind's own)."""

    def __init__(
        self,
        inner: JobKind,
        signer: ItemSigner,
        pool: ActorPool,
        path: Callable[[Job, Item], str],
        body: Callable[[Item], bytes],
        store: JobStore,
        address: str,
    ):
        self.name = inner.name
        self.inner = inner
        self.signer = signer
        self.pool = pool
        self.path = path
        self.body = body
        self.store = store
        self.address = address
        self._sent: Counter[str] = Counter()  # items sent to the actors, per job

    async def run_item(self, job: Job, item: Item) -> dict[str, Any]:
        body = self.body(item)
        token = self.signer.sign(job.id, item.id, job.key_id, body)
        self._sent[job.id] += 1
        return await self.pool.call(self.path(job, item), token, body)

    async def finish(self, job: Job, cancelled: bool) -> Finish:
        sent = self._sent.pop(job.id, 0)
        if sent:  # says where the work ran, in the job's events
            message = f"{sent} items ran on Ray actors (cluster {self.address})"
            await asyncio.to_thread(
                self.store.add_event, job.id, message, "info", {"ray_items": sent}
            )
        return await self.inner.finish(job, cancelled)


def connect(ray: ModuleType, address: str) -> None:
    """Join the cluster once per process (the executor and a Ray training share it)."""
    with _CONNECTING:
        if ray.is_initialized():
            return
        check_reachable(address)
        try:
            join(ray, address)
        except (ConnectionError, RuntimeError) as error:
            raise RayUnreachable(
                f"could not join the Ray cluster at KEEL_RAY_ADDRESS={address} ({error}); "
                "start it (ray start --head), fix the address, or unset KEEL_RAY_ADDRESS to "
                "run jobs in this process"
            ) from error


class RayExecutor(LocalExecutor):
    """Connects to the Ray cluster at start, runs a pool of ItemCaller actors (restarted by
    Ray when they die), and kills them at stop. Batch lines and the items of the kinds in
    ON_RAY run on the actors; other kinds (ingestion reads files here) run in this process."""

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
        super().__init__(store, {"batch": batch}, options, on_item=on_item)
        self.batch = batch
        self.signer = signer
        self.ray_options = ray_options
        self._actors: list[Any] = []
        self._pool: ActorPool | None = None
        self._ray: ModuleType | None = None
        self._on_ray: dict[str, JobKind] = {}

    def kind_for(self, name: str) -> JobKind:
        kind = self.kinds[name]
        if self._pool is None or (name != "batch" and name not in ON_RAY):
            return kind
        found = self._on_ray.get(name)
        if found is None:
            path, body = (line_path, line_body) if name == "batch" else (item_path, item_body)
            found = self._on_ray[name] = RayKind(
                kind, self.signer, self._pool, path, body, self.store, self.ray_options.address
            )
        return found

    async def start(self) -> None:
        if self._ray is None:
            ray = import_ray()
            await asyncio.to_thread(self._connect, ray)
            self._ray = ray
            self._pool = ActorPool(self._actors, ray)
        await super().start()

    def _connect(self, ray: ModuleType) -> None:
        from keel.jobs.ray_caller import ItemCaller

        connect(ray, self.ray_options.address)
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
            "jobs: running batch lines and experiment items on %d Ray actors at %s, calling "
            "back %s",
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
            self._on_ray.clear()
            self._pool = None
            self._ray = None
