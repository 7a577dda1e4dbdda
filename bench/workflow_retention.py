"""Run data stays bounded under retention: 10,000 runs of a 3-step workflow, pruned to the
newest 1,000 every 1,000 runs, beside the same runs with no retention.

Prints JSON: rows and SQLite file sizes (database + WAL) every 1,000 runs, both ways.
Run: `python bench/workflow_retention.py [--runs 10000] [--keep 1000]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

SPEC = {
    "name": "triage",
    "input": {"type": "object"},
    "steps": [
        {"id": "clean", "transform": {"value": "{{ input.text | trim | lower }}"}},
        {"id": "words", "transform": {"value": "{{ steps.clean.output.split() | length }}"}},
        {"id": "label", "transform": {"value": {"long": "{{ steps.words.output > 5 }}",
                                                "text": "{{ steps.clean.output }}"}}},
    ],
}  # fmt: skip
TEXT = "The printer on the third floor is on fire again and nobody answers the phone"


def _size(data: Path) -> int:
    return sum(p.stat().st_size for p in data.glob("keel.db*"))


async def _series(runs: int, keep: int | None) -> list[dict[str, Any]]:
    from keel.server.services import build_services, stop_services
    from keel.settings import Settings
    from keel.store import migrate
    from keel.store.db import Database
    from keel.workflows.service import Workflows

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        settings = Settings.model_validate(
            {"data_dir": data, "local_model": False, "embeddings": False, "tracing": False}
        )
        database = Database(settings.effective_database_url)
        migrate.upgrade(database)
        services = build_services(settings, database)
        key = services.keys.bootstrap_admin(data)
        assert key is not None
        services.keys.load_cache()
        principal = await services.keys.verify(key)
        flows = Workflows(database, services.gateway, principal_of=services.keys.principal_of,
                          max_runs=keep)  # fmt: skip
        flows.put("default", "workflow", SPEC)
        points = []
        for n in range(1, runs + 1):
            await flows.run(principal, "workflow", "triage", {"text": f"{TEXT} {n}"})
            if n % 1000 == 0:
                if keep is not None:
                    await flows.prune()
                points.append({"runs_made": n, "runs_kept": flows.store.count_runs(),
                               "step_rows": flows.store.count_steps(),
                               "bytes": _size(data)})  # fmt: skip
        await flows.close()
        await stop_services(services)
        return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--keep", type=int, default=1_000)
    args = parser.parse_args()
    kept = asyncio.run(_series(args.runs, args.keep))
    unbounded = asyncio.run(_series(args.runs, None))
    print(json.dumps({"retention_max_runs": args.keep, "with_retention": kept,
                      "without_retention": unbounded}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
