"""FineTuneSystem: the fine-tuning service and its training executor, built once per process."""

from __future__ import annotations

import threading
from pathlib import Path

from keel.evals.datasets import DatasetService
from keel.finetune.executor import TrainingExecutor, TrainingOptions
from keel.finetune.register import Registrar
from keel.finetune.runner import Runner
from keel.finetune.service import FineTuneService
from keel.finetune.sources import Sources
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
        datasets: DatasetService | None = None,
    ):
        jobs, runs = JobStore(database), FineTuneStore(database)
        sources = Sources(FileStore(database), datasets)
        self.registrar = Registrar(registry, runs)
        self.runner = Runner(
            jobs,
            sources,
            runs,
            self.registrar,
            work_root,
            self.registrar.base_path,
            threading.Lock(),
        )
        self.executor = TrainingExecutor(jobs, self.runner, options)
        self.service = FineTuneService(jobs, sources, runs, self.registrar, database)

    async def start(self) -> None:
        await self.executor.start()

    async def stop(self) -> None:
        await self.executor.stop()
