"""Compare the heap snapshots `bench/soak.py --memtrace DIR` took inside Keel: what grew?

`python bench/memtrace.py DIR` diffs each snapshot against the first (and the last against
the one before it), by allocation line and by the innermost Keel frame that led there.
JSON on stdout; tables on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import tracemalloc
from collections import defaultdict
from pathlib import Path
from typing import Any

_KEEL = "/keel/"
_NOISE = (tracemalloc.__file__, "<frozen importlib._bootstrap>", "<unknown>")


def load(directory: Path) -> list[tuple[dict[str, Any], tracemalloc.Snapshot]]:
    found = []
    for pickle in sorted(directory.glob("snap-*.pickle")):
        meta = json.loads(pickle.with_suffix(".json").read_text())
        snapshot = tracemalloc.Snapshot.load(str(pickle))
        snapshot = snapshot.filter_traces([tracemalloc.Filter(False, f) for f in _NOISE])
        found.append((meta, snapshot))
    if not found:
        raise SystemExit(f"no snap-*.pickle in {directory}; run bench/soak.py --memtrace first")
    return found


def _where(frame: tracemalloc.Frame) -> str:
    name = frame.filename
    for marker in (_KEEL, "/site-packages/", "/lib/python3"):
        if marker in name:
            name = name.split(marker, 1)[1]
            if marker == _KEEL:
                name = "keel/" + name
            break
    return f"{name}:{frame.lineno}"


def by_keel_frame(snapshot: tracemalloc.Snapshot) -> dict[str, tuple[int, int]]:
    """Bytes and blocks by (innermost Keel frame, allocating line)."""
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for trace in snapshot.traces:
        frames = trace.traceback[::-1]  # Traceback is oldest first; want the allocation first
        keel = next((f for f in frames if _KEEL in f.filename), None)
        key = _where(frames[0]) if keel is None else f"{_where(keel)} <- {_where(frames[0])}"
        if keel is None:
            key = "(no keel frame) " + key
        entry = totals[key]
        entry[0] += trace.size
        entry[1] += 1
    return {key: (size, count) for key, (size, count) in totals.items()}


def grown(
    old: dict[str, tuple[int, int]], new: dict[str, tuple[int, int]], top: int
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for key in set(old) | set(new):
        size_old, count_old = old.get(key, (0, 0))
        size_new, count_new = new.get(key, (0, 0))
        rows.append({"where": key, "size_diff": size_new - size_old, "size": size_new,
                     "count_diff": count_new - count_old, "count": count_new})  # fmt: skip
    rows.sort(key=lambda r: -abs(r["size_diff"]))
    return rows[:top]


def by_line(old: tracemalloc.Snapshot, new: tracemalloc.Snapshot, top: int) -> list[dict[str, Any]]:
    stats = new.compare_to(old, "traceback")
    rows = []
    for stat in stats[:top]:
        frames = stat.traceback[::-1]  # the allocating frame first
        keel = [_where(f) for f in frames if _KEEL in f.filename][:4]
        rows.append({
            "at": _where(frames[0]), "keel_frames": keel, "size_diff": stat.size_diff,
            "size": stat.size, "count_diff": stat.count_diff, "count": stat.count,
        })  # fmt: skip
    return rows


def _heap(meta: dict[str, Any]) -> dict[str, Any]:
    malloc = meta.get("malloc", {})
    return {
        "uptime_s": meta["uptime_s"],
        "rss_mb": round(meta["rss_kb"] / 1024, 1),
        "traced_mb": round(meta["traced_bytes"] / 2**20, 2),
        "tracemalloc_overhead_mb": round(meta["tracemalloc_overhead_bytes"] / 2**20, 2),
        "malloc_in_use_mb": round(malloc.get("uordblks", 0) / 2**20, 2),
        "malloc_free_kept_mb": round(malloc.get("fordblks", 0) / 2**20, 2),
        "malloc_mmapped_mb": round(malloc.get("hblkhd", 0) / 2**20, 2),
        "sqlite_mb": round(meta.get("sqlite", {}).get("memory_used", 0) / 2**20, 2),
        "rss_after_trim_mb": (
            round(meta["rss_after_trim_kb"] / 1024, 1) if "rss_after_trim_kb" in meta else None
        ),
    }


def _types_grown(old: dict[str, Any], new: dict[str, Any], top: int) -> list[tuple[str, int]]:
    a, b = old["gc_objects_by_type"], new["gc_objects_by_type"]
    diffs = [(name, b.get(name, 0) - a.get(name, 0)) for name in set(a) | set(b)]
    return sorted(diffs, key=lambda d: -abs(d[1]))[:top]


def _table(title: str, rows: list[dict[str, Any]]) -> None:
    print(f"\n{title}", file=sys.stderr)
    for r in rows:
        where = r.get("where") or f"{r['at']}  via {' <- '.join(r['keel_frames']) or '-'}"
        print(f"  {r['size_diff'] / 1024:+9.1f} KiB  {r['count_diff']:+8d} blocks  "
              f"(now {r['size'] / 1024:8.1f} KiB)  {where}", file=sys.stderr)  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("directory", type=Path, help="Where soak.py --memtrace wrote snapshots.")
    parser.add_argument("--top", type=int, default=15, help="Rows per comparison.")
    args = parser.parse_args()
    snaps = load(args.directory)
    heaps = [_heap(meta) for meta, _ in snaps]
    print("heap per snapshot:", file=sys.stderr)
    for heap in heaps:
        print("  " + "  ".join(f"{k} {v}" for k, v in heap.items()), file=sys.stderr)
    keel_views = [by_keel_frame(s) for _, s in snaps]
    comparisons = []
    pairs = [(0, i) for i in range(1, len(snaps))]
    if len(snaps) > 2:
        pairs.append((len(snaps) - 2, len(snaps) - 1))
    for a, b in pairs:
        label = f"{snaps[a][0]['uptime_s']:.0f} s -> {snaps[b][0]['uptime_s']:.0f} s"
        keel = grown(keel_views[a], keel_views[b], args.top)
        lines = by_line(snaps[a][1], snaps[b][1], args.top)
        types = _types_grown(snaps[a][0], snaps[b][0], 10)
        _table(f"{label}, by innermost Keel frame <- allocating line:", keel)
        _table(f"{label}, by traceback:", lines)
        print(f"  live objects by type: {types}", file=sys.stderr)
        comparisons.append({"from_s": snaps[a][0]["uptime_s"], "to_s": snaps[b][0]["uptime_s"],
                            "by_keel_frame": keel, "by_traceback": lines,
                            "object_types": types})  # fmt: skip
    print(json.dumps({"heaps": heaps, "comparisons": comparisons}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
