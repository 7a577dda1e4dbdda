"""Topics as a job (`insights.topics`): one item clusters the job's window and stores the
result under the job's id, so /api/insights/topics serves it and the jobs API follows it.

Clustering 20,000 stored vectors takes seconds to a minute on two cores: too long for a
request, and worth keeping. Running an item again (a crash, a retry) stores it again under
the same id: the result is a function of the window, so nothing is counted twice.
"""

from __future__ import annotations

import asyncio
from typing import Any

from keel.errors import KeelError
from keel.insights.service import InsightsService
from keel.jobs.executor import Finish, ItemFailed
from keel.jobs.model import Item, Job
from keel.jobs.store import JobStore

KIND = "insights.topics"


class TopicsKind:
    """Clusters the job's window (params: since_us, until_us, route, granularity)."""

    name = KIND

    def __init__(self, service: InsightsService, store: JobStore):
        self.service, self.store = service, store

    async def run_item(self, job: Job, item: Item) -> dict[str, Any]:
        params = job.params
        try:
            found = await asyncio.to_thread(
                self.service.run_topics,
                job.id,
                job.project_id,
                int(params["since_us"]),
                int(params["until_us"]),
                route=params.get("route"),
                granularity=params.get("granularity"),
            )
        except KeelError as exc:  # an empty window, no traffic: the same answer on a retry
            error = {"status": exc.status, **exc.envelope()["error"]}
            raise ItemFailed(error, retryable=exc.status >= 500) from None
        return {"requests": found["requests"], "topics": len(found["topics"])}

    async def finish(self, job: Job, cancelled: bool) -> Finish:
        items = await asyncio.to_thread(self.store.items, job.id)
        done = [item for item in items if item.state == "done" and item.result]
        if done:
            return Finish(result=dict(done[0].result or {}))
        failed = [item.error for item in items if item.error]
        message = str(failed[0].get("message")) if failed and failed[0] else "no topics found"
        return Finish(state="failed", error=message)
