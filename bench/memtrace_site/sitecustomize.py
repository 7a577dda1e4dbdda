"""Bench only: heap snapshots from inside `keel serve`, started by bench/soak.py --memtrace.

With this directory on PYTHONPATH and KEEL_BENCH_MEMTRACE_DIR set, the first SIGUSR1
starts tracemalloc (not at start-up: tracing Keel's imports makes them take a minute) and
each one writes `snap-NNN.pickle` (a tracemalloc snapshot) and `snap-NNN.json` (RSS, glibc
malloc totals, live objects by type) to that directory. Only what was allocated after the
first signal is traced, which is what growth is made of; bench/memtrace.py compares them.
Without the variable it does nothing.
"""

from __future__ import annotations

import os


def _install(directory: str) -> None:
    import collections
    import ctypes
    import gc
    import json
    import signal
    import time
    import tracemalloc
    from pathlib import Path
    from types import FrameType

    fields = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"

    class _Mallinfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in fields.split()]

    libc = ctypes.CDLL(None)
    mallinfo2 = getattr(libc, "mallinfo2", None)
    if mallinfo2 is not None:
        mallinfo2.restype = _Mallinfo2
    try:
        # The library Python's sqlite3 module is linked to (same soname: the same instance).
        sqlite = ctypes.CDLL("libsqlite3.so.0")
    except OSError:
        sqlite = None
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    count = [0]

    def rss_kb() -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def malloc_totals() -> dict[str, int]:
        if mallinfo2 is None:
            return {}
        info = mallinfo2()
        # arena: bytes taken from the OS by malloc's heap(s) (sbrk + arena mmaps); uordblks:
        # in use; fordblks: free but kept (fragmentation or not yet trimmed); hblkhd: mmapped.
        return {name: int(getattr(info, name)) for name in fields.split()}

    def sqlite_totals() -> dict[str, int]:
        # SQLite allocates with malloc, out of tracemalloc's sight: page caches, statements.
        if sqlite is None:
            return {}
        found = {}
        for name, op in (("memory_used", 0), ("pagecache_overflow", 2), ("malloc_count", 9)):
            current, highwater = ctypes.c_int64(), ctypes.c_int64()
            if sqlite.sqlite3_status64(op, ctypes.byref(current), ctypes.byref(highwater), 0) == 0:
                found[name] = current.value
        return found

    def dump(_signum: int, _frame: FrameType | None) -> None:
        if not tracemalloc.is_tracing():
            tracemalloc.start(int(os.environ.get("KEEL_BENCH_MEMTRACE_FRAMES", "25")))
        count[0] += 1
        stem = out / f"snap-{count[0]:03d}"
        rss_before = rss_kb()
        collected = gc.collect()
        snapshot = tracemalloc.take_snapshot()
        snapshot.dump(str(stem) + ".pickle")
        types = collections.Counter(type(o).__qualname__ for o in gc.get_objects())
        current, peak = tracemalloc.get_traced_memory()
        meta = {
            "index": count[0],
            "uptime_s": round(time.monotonic() - started, 1),
            "rss_kb": rss_before,
            "gc_collected": collected,
            "traced_bytes": current,
            "traced_peak_bytes": peak,
            "tracemalloc_overhead_bytes": tracemalloc.get_tracemalloc_memory(),
            "malloc": malloc_totals(),
            "sqlite": sqlite_totals(),
            "gc_objects_by_type": dict(types.most_common(60)),
        }
        if os.environ.get("KEEL_BENCH_MEMTRACE_TRIM"):
            # What free-but-kept heap glibc gives back when asked: a measure of fragmentation.
            libc.malloc_trim(0)
            meta["rss_after_trim_kb"] = rss_kb()
            meta["malloc_after_trim"] = malloc_totals()
        Path(str(stem) + ".json").write_text(json.dumps(meta, indent=1) + "\n")

    signal.signal(signal.SIGUSR1, dump)


if os.environ.get("KEEL_BENCH_MEMTRACE_DIR"):
    _install(os.environ["KEEL_BENCH_MEMTRACE_DIR"])
