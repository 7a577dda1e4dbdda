"""TrainingExecutor: runs fine-tuning jobs from the job store, one training at a time.

It implements jobs/'s Executor interface (start, stop, wake, cancelled) for jobs that are one
long step rather than many items: the job's lease is renewed while it trains, a stop hands
the job back (to resume from its newest checkpoint at the next start), a crash leaves the
lease to run out so the next process takes the job up and resumes, and a cancel stops the
training thread at its next step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from dataclasses import dataclass

from keel.finetune.runner import Outcome, Runner
from keel.jobs.executor import worker_name
from keel.jobs.model import Job
from keel.jobs.store import JobStore

log = logging.getLogger("keel.finetune")
KIND = "ftjob"


@dataclass(frozen=True, slots=True)
class TrainingOptions:
    lease_seconds: float = 15.0
    heartbeat_seconds: float = 1.0
    poll_seconds: float = 2.0


class TrainingExecutor:
    def __init__(self, store: JobStore, runner: Runner, options: TrainingOptions | None = None):
        self.store = store
        self.runner = runner
        self.options = options or TrainingOptions()
        self.worker = worker_name()
        self._wake = asyncio.Event()
        self._stop = threading.Event()
        self._cancels: dict[str, threading.Event] = {}
        self._running: dict[str, asyncio.Task[None]] = {}
        self._loop_task: asyncio.Task[None] | None = None

    @property
    def running_jobs(self) -> list[str]:
        return list(self._running)

    async def start(self) -> None:
        if self._loop_task is None:
            self._stop.clear()
            self._loop_task = asyncio.create_task(self._loop(), name="finetune-executor")

    async def stop(self) -> None:
        """Stop training at the next step and hand running jobs back to resume later."""
        self._stop.set()
        self._wake.set()
        if self._running:
            await asyncio.gather(*self._running.values(), return_exceptions=True)
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
            self._loop_task = None

    def wake(self) -> None:
        self._wake.set()

    def cancelled(self, job_id: str) -> None:
        event = self._cancels.get(job_id)
        if event is not None:
            event.set()

    async def _loop(self) -> None:
        while not self._stop.is_set():
            job = None
            try:
                job = await asyncio.to_thread(
                    self.store.claim, self.worker, self.options.lease_seconds, [KIND]
                )
            except Exception:
                log.exception("finetune: could not look for work")
            if job is not None:
                self._cancels[job.id] = threading.Event()
                task = asyncio.create_task(self._run_job(job), name=f"ftjob-{job.id}")
                self._running[job.id] = task
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.options.poll_seconds)

    async def _run_job(self, job: Job) -> None:
        lease = job.lease
        assert lease is not None
        cancel = self._cancels[job.id]
        if job.state == "cancelling":
            cancel.set()
        beat = asyncio.create_task(self._heartbeat(job, lease, cancel))
        try:
            try:
                outcome = await asyncio.to_thread(self.runner.run, job, self._stop, cancel)
            except Exception as error:
                log.exception("fine-tuning job %s failed", job.id)
                outcome = Outcome("failed", error=f"{type(error).__name__}: {error}")
            if outcome.state == "released":
                await asyncio.to_thread(
                    self.store.release, job.id, lease, f"{self.worker} is stopping"
                )
                return
            await asyncio.to_thread(
                lambda: self.store.finish(
                    job.id, lease, outcome.state, result=outcome.result, error=outcome.error
                )
            )
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
            self._running.pop(job.id, None)
            self._cancels.pop(job.id, None)

    async def _heartbeat(self, job: Job, lease: str, cancel: threading.Event) -> None:
        while True:
            await asyncio.sleep(self.options.heartbeat_seconds)
            try:
                state = await asyncio.to_thread(
                    self.store.heartbeat, job.id, lease, self.options.lease_seconds
                )
            except Exception:
                log.exception("finetune job %s: heartbeat failed", job.id)
                continue
            if state is None:  # another worker holds it now: stop touching it
                self._stop_job(cancel)
                return
            if state in ("cancelling", "cancelled"):
                cancel.set()

    @staticmethod
    def _stop_job(cancel: threading.Event) -> None:
        cancel.set()
