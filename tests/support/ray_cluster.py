"""A real local Ray cluster for the tests of the Ray executor and Ray deployments."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from keel.deploy.llamacpp import free_port


def require_ray() -> None:
    """Ray is in the dev extra; under CI a missing Ray is a failure, never a skip."""
    if os.environ.get("CI"):
        import ray  # noqa: F401
    else:
        pytest.importorskip("ray", reason="Ray is in the dev extra: pip install -e '.[dev]'")


@contextmanager
def one_cluster_at_a_time() -> Iterator[None]:
    """Held while a test's cluster runs. `./run test` runs test files in two processes, and
    two clusters at once would share 2 cores, and `processes_titled` would count the other
    cluster's actors."""
    with (Path(tempfile.gettempdir()) / "keel-test-ray.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
        yield


@contextmanager
def ray_head(log: Path, cpus: int = 2) -> Iterator[str]:
    """`ray start --head --block`; ending the command ends the cluster it started. Yields
    the address for KEEL_RAY_ADDRESS."""
    require_ray()
    with one_cluster_at_a_time():
        yield from _ray_head(log, cpus)


def _ray_head(log: Path, cpus: int) -> Iterator[str]:
    port = free_port()
    # The dashboard agent's port is fixed (52365) unless given: a free port chosen for the
    # head can be that one, and then `ray start` refuses to start.
    agent = free_port()
    while agent == port:
        agent = free_port()
    ray = Path(sys.executable).parent / "ray"
    command = [str(ray), "start", "--head", "--block", f"--port={port}", f"--num-cpus={cpus}",
               f"--dashboard-agent-listen-port={agent}", "--include-dashboard=false",
               "--disable-usage-stats"]  # fmt: skip
    with log.open("wb") as out:
        head = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while "Ray runtime started" not in log.read_text(errors="replace"):
            assert head.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(60)
        except subprocess.TimeoutExpired:
            head.kill()
            head.wait()


def processes_titled(word: str) -> list[int]:
    """Pids of the processes whose command line names `word` (Ray titles its actors
    ray::ClassName)."""
    import psutil  # Ray's own dependency

    found = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        if any(word in part for part in process.info["cmdline"] or []):
            found.append(process.info["pid"])
    return found
