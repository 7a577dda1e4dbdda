"""The checkpoint store on SQLite and PostgreSQL: runs, step rows as written, claims of
orphaned runs, and pruning."""

from __future__ import annotations

import time

from keel.store import migrate
from keel.store.db import Database
from keel.workflows.store import Checkpoint, WorkflowStore, now_us, run_id


def _run(store: WorkflowStore, status: str = "running", lease: float = 0.0) -> str:
    rid = run_id()
    store.create_run({"id": rid, "project_id": "default", "key_id": "k", "kind": "workflow",
                      "workflow": "w", "version": 1, "status": status, "input": {"q": "x"},
                      "output": None, "error": None, "failed_step": None, "trace_id": None,
                      "cancel_requested": False, "lease_until": lease, "created_us": now_us(),
                      "updated_us": now_us()})  # fmt: skip
    return rid


def test_checkpoints_read_back_as_written_and_orphans_are_claimed_once(database_url: str) -> None:
    database = Database(database_url)
    try:
        migrate.upgrade(database)
        store = WorkflowStore(database)
        rid = _run(store)
        output = {"text": "héllo", "n": [1, 2.5, None], "ok": True}
        store.save(rid, Checkpoint("a", "llm", "done", output, None, 1, 2, {"m": 1}, 1, 12))
        store.save(rid, Checkpoint("each[0].b", "http", "failed", None, "503", 3, 4))
        saved = store.checkpoints(rid)
        assert saved["a"].output == output
        assert saved["a"].input == {"m": 1}
        assert saved["a"].tokens == 12
        assert saved["each[0].b"].output is None
        assert saved["each[0].b"].error == "503"
        store.forget_failed(rid)
        assert list(store.checkpoints(rid)) == ["a"]
        now = time.time()
        assert store.orphans(now) == [rid]  # its lease (0) lapsed long ago
        assert store.claim(rid, now + 10, now)
        assert not store.claim(rid, now + 10, now)  # held now: a second replica gets nothing
        store.update_run(rid, status="succeeded", output={"done": 1})
        assert store.run(rid)["output"] == {"done": 1}  # type: ignore[index]
        assert store.prune(before_us=None, keep=0) == 1
        assert store.count_steps() == 0
        store.close()
    finally:
        database.dispose()
