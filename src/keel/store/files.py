"""Files and folders Keel keeps prompts, answers and secrets in: private to the user that runs it.

Modes are set at creation, never left to the umask (0644 lets every local user read them).
"""

from __future__ import annotations

import os
from pathlib import Path

_OTHERS = 0o077  # group and world bits


def private_dir(path: Path) -> None:
    """Create `path` (mode 0700) if missing; take group and world access away if not.

    For Keel's own data dir only: a folder Keel does not own is not Keel's to tighten.
    """
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777
    if mode & _OTHERS:
        path.chmod(mode & ~_OTHERS)


def private_file(path: Path) -> None:
    """Create `path` empty (mode 0600) if missing; take group and world access away if not."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = path.stat().st_mode & 0o777
        if mode & _OTHERS:
            path.chmod(mode & ~_OTHERS)
    else:
        os.close(fd)
