"""FineTuneSystem: the fine-tuning service and its training executor, built once per process."""

from __future__ import annotations

import threading
from pathlib import Path

from keel.finetune.executor import TrainingExecutor, TrainingOptions
from keel.finetune.register import Registrar
from keel.finetune.runner import Runner
from keel.finetune.service import FineTuneService
from keel.finetune.store import FineTuneStore
from keel.jobs.files import FileStore
from keel.jobs.store import JobStore
from keel.registry.service import RegistryService
from keel.store.db import Database


class FineTuneSystem:
    def __init__(
        self,
        database: Database,
        registry: RegistryService,
        work_root: Path,
        options: TrainingOptions | None = None,
    ):
        jobs, files, runs = JobStore(database), FileStore(database), FineTuneStore(database)
        self.registrar = Registrar(registry, runs)
        self.runner = Runner(
            jobs, files, runs, self.registrar, work_root, self.registrar.base_path, threading.Lock()
        )
        self.executor = TrainingExecutor(jobs, self.runner, options)
        self.service = FineTuneService(jobs, files, runs, self.registrar, database)

    async def start(self) -> None:
        await self.executor.start()

    async def stop(self) -> None:
        await self.executor.stop()
