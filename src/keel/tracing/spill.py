"""Append-only local files (JSON lines) that hold trace records while the store is away,
and those the store rejected (the quarantine).

Each process appends to a segment of its own, locked with flock so another process
sharing the data dir never replays it; replay reads closed segments and deletes them.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import orjson

from keel.tracing.convert import Converted

log = logging.getLogger("keel.tracing")


class SpillFile:
    """Segments under `directory`, at most `max_bytes` in all (thread-safe)."""

    def __init__(self, directory: Path, max_bytes: int):
        self.directory = directory
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._active: IO[bytes] | None = None
        self._active_path: Path | None = None
        self._bytes: int | None = None  # measured on first use: no I/O at construction
        self.spilled = 0  # records written to spill files by this process
        self.replayed = 0  # records replayed from spill files into the store
        self.unreadable = 0  # lines of spill files that were not records (skipped)

    @property
    def size(self) -> int:
        """Bytes waiting in spill files, as last measured (0 before the first use)."""
        return self._bytes or 0

    def _size(self) -> int:
        if self._bytes is None:
            self._bytes = sum(p.stat().st_size for p in self._segments())
        return self._bytes

    def _segments(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(self.directory.glob("traces-*.jsonl"))

    def pending(self) -> bool:
        """Whether any segment (this process's or an orphaned one) waits for replay."""
        with self._lock:
            return self._size() > 0 or (
                self._active_path is not None and self._active_path.exists()
            )

    def append(self, records: list[Converted]) -> int:
        """Append records; returns how many fit under the size cap (the rest are dropped)."""
        written = 0
        with self._lock:
            size = self._size()
            lines = []
            for record in records:
                line = orjson.dumps(record.as_json()) + b"\n"
                if size + len(line) > self.max_bytes:
                    break
                size += len(line)
                lines.append(line)
                written += 1
            if lines:
                handle = self._open()
                handle.write(b"".join(lines))
                handle.flush()
                self._bytes = size
                self.spilled += written
        return written

    def _open(self) -> IO[bytes]:
        if self._active is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            path = self.directory / f"traces-{time.time_ns()}-{os.getpid()}.jsonl"
            handle = path.open("ab")
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._active, self._active_path = handle, path
        return self._active

    def _seal(self) -> None:
        """Close the active segment so that it can be replayed; new spills start a new one."""
        if self._active is not None:
            handle = self._active
            handle.flush()
            os.fsync(handle.fileno())
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
            handle.close()
            self._active = self._active_path = None

    def close(self) -> None:
        with self._lock:
            self._seal()

    def replay(self, write: Callable[[list[Converted]], None], batch_size: int) -> int:
        """Write every replayable segment to the store, oldest first; delete each after.

        Stops at the first failed write (the exception propagates); the segment stays and
        is replayed from its start next time, which the store's idempotent inserts allow.
        """
        with self._lock:
            self._seal()
            segments = self._segments()
        total = 0
        for path in segments:
            try:
                handle = path.open("rb")
            except FileNotFoundError:
                continue  # another process replayed it
            with handle:
                try:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live process still appends to it
                size = os.fstat(handle.fileno()).st_size
                skipped: list[int] = []
                for batch in _batches(handle, batch_size, skipped):
                    write(batch)
                    total += len(batch)
                    with self._lock:
                        self.replayed += len(batch)
                path.unlink(missing_ok=True)
                with self._lock:
                    self.unreadable += len(skipped)
            with self._lock:
                self._bytes = max(0, self._size() - size)
        return total

    def expire(self, before: float) -> tuple[int, int]:
        """Delete closed segments last written before `before` (epoch seconds), unread.

        Returns (files, records) deleted: records kept past the trace retention would
        only be deleted again once replayed.
        """
        with self._lock:
            active = self._active_path
        files, records = _expire(self._segments(), before, skip=active)
        if files:
            with self._lock:
                self._bytes = None  # measured again on next use
        return files, records


class QuarantineFile:
    """Records the store rejected for their data, kept for a person to look at.

    A line is a spill record plus the store's reason, so a file moved into the spill
    directory is replayed like any spill segment (after the cause is fixed). Files are
    `traces-<time>-<pid>.jsonl`, one per process, at most `max_bytes` in all.
    """

    def __init__(self, directory: Path, max_bytes: int):
        self.directory = directory
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._path: Path | None = None
        self._bytes: int | None = None  # measured on first use: no I/O at construction

    def _files(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(self.directory.glob("traces-*.jsonl"))

    @property
    def size(self) -> int:
        return self._bytes or 0

    def append(self, record: Converted, reason: str) -> bool:
        """Keep one record; False when the quarantine is full (the record is dropped)."""
        line = orjson.dumps({**record.as_json(), "reason": reason}) + b"\n"
        with self._lock:
            if self._bytes is None:
                self._bytes = sum(p.stat().st_size for p in self._files())
            if self._bytes + len(line) > self.max_bytes:
                return False
            if self._path is None:
                self.directory.mkdir(parents=True, exist_ok=True)
                self._path = self.directory / f"traces-{time.time_ns()}-{os.getpid()}.jsonl"
            # Rare: opened per record, so nothing stays open and nothing needs closing.
            with self._path.open("ab") as handle:
                handle.write(line)
            self._bytes += len(line)
        return True

    def expire(self, before: float) -> tuple[int, int]:
        """Delete files last written before `before` (epoch seconds): (files, records)."""
        with self._lock:
            files, records = _expire(self._files(), before, skip=None)
            if files:
                self._bytes = None
        return files, records


def _expire(paths: list[Path], before: float, skip: Path | None) -> tuple[int, int]:
    files = records = 0
    for path in paths:
        if path == skip:
            continue
        try:
            if path.stat().st_mtime >= before:
                continue
            with path.open("rb") as handle:
                try:  # a segment a live process appends to is left alone
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue
                lines = sum(1 for _ in handle)
                path.unlink(missing_ok=True)
        except FileNotFoundError:
            continue  # another process replayed or expired it
        files += 1
        records += lines
    return files, records


def _batches(handle: IO[bytes], size: int, skipped: list[int]) -> Iterator[list[Converted]]:
    batch: list[Converted] = []
    for number, line in enumerate(handle, 1):
        if not line.endswith(b"\n"):
            # A write cut short by a crash: everything before it is whole.
            log.warning("spill file %s: ignoring a truncated last line %d", handle.name, number)
            break
        try:
            batch.append(Converted.from_json(orjson.loads(line)))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            # Not a record this code wrote: skip it rather than stall every replay on it.
            log.warning("spill file %s: skipping unreadable line %d", handle.name, number)
            skipped.append(number)
            continue
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
