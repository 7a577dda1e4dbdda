"""Knowledge ingestion as a job (`kb.ingest`): one item per uploaded file, each parsed,
chunked, embedded and stored by `KnowledgeBases.ingest`, with progress, retries and events
like any job (/api/jobs, the console's jobs page, `keel kb ingest`).

Files are staged in the file store first (purpose `knowledge`, checked as they arrive, so a
bad file is a 400 and never becomes an item); the job deletes them as it ends. Re-running an
item is harmless: an unchanged document is skipped by its content hash.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from keel.errors import KeelError
from keel.jobs.executor import Finish, ItemFailed
from keel.jobs.files import FileStore
from keel.jobs.model import Item, Job
from keel.jobs.store import JobStore
from keel.knowledge.service import KnowledgeBases

KIND = "kb.ingest"
PURPOSE = "knowledge"


def _error(exc: KeelError) -> dict[str, Any]:
    return {"status": exc.status, **exc.envelope()["error"]}


class IngestKind:
    """Ingests one staged file per item into the job's knowledge base."""

    name = KIND

    def __init__(self, knowledge: KnowledgeBases, store: JobStore, files: FileStore):
        self.knowledge, self.store, self.files = knowledge, store, files

    async def run_item(self, job: Job, item: Item) -> dict[str, Any]:
        payload = item.payload
        data = await asyncio.to_thread(self.files.content, payload["file_id"], job.project_id)
        if data is None:
            raise ItemFailed({"status": 404, "message": f"the staged file of {item.key!r} is "
                              "gone; upload it again", "code": "file_not_found"})  # fmt: skip
        try:
            results = await self.knowledge.ingest(
                job.project_id, job.params["kb"], item.key, data,
                metadata=payload.get("metadata"), actor=f"key:{job.key_id}",
            )  # fmt: skip
        except KeelError as exc:
            # A model still loading or a store that hiccuped may pass; bad input never will.
            raise ItemFailed(_error(exc), retryable=exc.status >= 500) from None
        return {"documents": [result.as_dict() for result in results]}

    async def finish(self, job: Job, cancelled: bool) -> Finish:
        """Count what the items did, and drop the staged files."""
        items = await asyncio.to_thread(self.store.items, job.id)
        counts: Counter[str] = Counter()
        for item in items:
            for document in (item.result or {}).get("documents", ()):
                counts[document["status"]] += 1
                if document["status"] != "unchanged":
                    counts["chunks"] += document["chunks"]
        counts["failed_files"] = sum(1 for item in items if item.state == "failed")
        for item in items:
            await asyncio.to_thread(self.files.delete, item.payload["file_id"], job.project_id)
        result = {key: counts.get(key, 0) for key in
                  ("created", "updated", "unchanged", "chunks", "failed_files")}  # fmt: skip
        return Finish(result=result)
