"""JobSystem: the job store, the file store and the executor one Keel process runs.

Built from the gateway and the key service (a batch line is a call of its owner's key), so
the server only translates HTTP to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from keel.auth.keys import Principal
from keel.gateway.pipeline import Gateway
from keel.jobs.batch import BatchKind
from keel.jobs.executor import ExecutorOptions, JobKind, LocalExecutor
from keel.jobs.files import FileStore
from keel.jobs.model import Job
from keel.jobs.ray_executor import RayExecutor, RayOptions
from keel.jobs.store import JobStore
from keel.jobs.tokens import ItemSigner
from keel.settings import Settings
from keel.store.db import Database

# Largest line of a batch input file; the whole file is bounded by max_body_bytes.
MAX_LINE_BYTES = 1024 * 1024
STATE_COUNT_SECONDS = 5.0

log = logging.getLogger("keel.jobs")


@dataclass
class JobCounts:
    """Items ended since start, for /metrics (jobs' states are read from the store)."""

    items_ok: int = 0
    items_failed: int = 0
    states: dict[str, int] = field(default_factory=dict)

    def on_item(self, _job: Job, ok: bool) -> None:
        if ok:
            self.items_ok += 1
        else:
            self.items_failed += 1


def ray_options(settings: Settings) -> RayOptions | None:
    """The Ray executor's options when KEEL_RAY_ADDRESS is set, else None (run locally)."""
    if not settings.ray_address:
        return None
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    return RayOptions(
        address=settings.ray_address,
        callback_url=settings.ray_callback_url or f"http://{host}:{settings.port}",
        actors=settings.ray_actors,
        timeout=settings.upstream_timeout,
    )


class JobSystem:
    def __init__(
        self,
        database: Database,
        gateway: Gateway,
        principal_of: Callable[[str], Awaitable[Principal | None]],
        options: ExecutorOptions | None = None,
        *,
        signer: ItemSigner | None = None,
        ray: RayOptions | None = None,
    ):
        self.store = JobStore(database)
        self.files = FileStore(database)
        self.counts = JobCounts()
        self.batch = BatchKind(gateway, self.store, principal_of)
        # Item tokens let Ray actors run lines here; without a signer no token is accepted.
        self.signer = signer
        self.executor: LocalExecutor
        if ray is not None:
            if signer is None:
                raise ValueError("the Ray executor needs an item signer")
            self.executor = RayExecutor(
                self.store, self.batch, signer, ray, options, on_item=self.counts.on_item
            )
        else:
            kinds: dict[str, JobKind] = {"batch": self.batch}
            self.executor = LocalExecutor(self.store, kinds, options, on_item=self.counts.on_item)
        self._counting: asyncio.Task[None] | None = None

    def register(self, kind: JobKind) -> None:
        """Run another module's kind of job here too (evaluation's experiments): the
        executor claims its jobs from its next look on."""
        self.executor.kinds.setdefault(kind.name, kind)

    async def start(self, *, run: bool = True) -> None:
        """Start counting jobs for /metrics and, when `run`, the executor (a `keel serve`
        with run_jobs off leaves the work to `keel worker` processes)."""
        if run:
            await self.executor.start()
        if self._counting is None:
            self._counting = asyncio.create_task(self._count_states(), name="jobs-count")

    async def stop(self) -> None:
        if self._counting is not None:
            self._counting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._counting
            self._counting = None
        await self.executor.stop()

    async def _count_states(self) -> None:
        """Jobs by state for /metrics, read in a thread every few seconds: a scrape never
        waits on the store."""
        while True:
            try:
                self.counts.states = await asyncio.to_thread(self.store.counts_by_state)
            except Exception:  # a store that does not answer leaves the last counts
                log.warning("jobs: could not count jobs by state", exc_info=True)
            await asyncio.sleep(STATE_COUNT_SECONDS)


class JobMetrics(Collector):
    """keel_jobs{state}, keel_job_items_total{outcome} and keel_jobs_running_here."""

    def __init__(self, system: JobSystem):
        self.system = system

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        jobs = GaugeMetricFamily(
            "keel_jobs", "Jobs in the store, by state (read every few seconds)", labels=["state"]
        )
        counts = self.system.counts.states
        for state in ("queued", "running", "cancelling", "succeeded", "failed", "cancelled"):
            jobs.add_metric([state], counts.get(state, 0))
        yield jobs
        items = CounterMetricFamily(
            "keel_job_items", "Job items this process ended, by outcome", labels=["outcome"]
        )
        items.add_metric(["ok"], self.system.counts.items_ok)
        items.add_metric(["failed"], self.system.counts.items_failed)
        yield items
        running = GaugeMetricFamily("keel_jobs_running_here", "Jobs this process is running")
        running.add_metric([], len(self.system.executor.running_jobs))
        yield running
