"""Log files of supervised model servers: one file per process, earlier ones rotated, never lost.

Each start moves the previous log to `<log>.1` (and `.1` to `.2`, …), so the lines a
crashed process wrote before it died are still there after its restart.
"""

from __future__ import annotations

import os
from pathlib import Path

TAIL_BYTES = 16 * 1024
TAIL_LINE_CHARS = 400


def rotated(path: Path, index: int) -> Path:
    return path.with_name(f"{path.name}.{index}")


def rotate(path: Path, keep: int) -> None:
    """Shift `path` to `path.1`, `path.1` to `path.2`, …; the oldest beyond `keep` goes."""
    if keep < 1 or not path.exists() or path.stat().st_size == 0:
        return
    for index in range(keep - 1, 0, -1):
        older = rotated(path, index)
        if older.exists():
            os.replace(older, rotated(path, index + 1))
    os.replace(path, rotated(path, 1))


def tail(path: Path, lines: int = 40) -> tuple[str, ...]:
    """The last `lines` lines of a log (each cut to a readable width), or none if unreadable."""
    try:
        with path.open("rb") as file:
            size = file.seek(0, os.SEEK_END)
            file.seek(max(0, size - TAIL_BYTES))
            data = file.read()
    except OSError:
        return ()
    text = data.decode("utf-8", "replace")
    return tuple(line[:TAIL_LINE_CHARS] for line in text.splitlines()[-lines:])
