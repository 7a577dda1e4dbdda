"""Start `keel serve` as a real process, as a user would, and stop it cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from keel.deploy.llamacpp import free_port


@dataclass
class KeelProcess:
    process: subprocess.Popen[bytes]
    base_url: str
    data_dir: Path
    log_path: Path

    @property
    def api_key(self) -> str:
        return (self.data_dir / "admin.key").read_text().strip()

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run `keel ARGS` against this Keel, with its local admin key."""
        env = {**os.environ, "KEEL_DATA_DIR": str(self.data_dir), "KEEL_URL": self.base_url,
               "KEEL_CONFIG": "/dev/null", "COLUMNS": "200"}  # fmt: skip
        return subprocess.run([sys.executable, "-m", "keel", *args], capture_output=True,
                              text=True, env=env, timeout=180)  # fmt: skip

    def api(self, method: str, path: str, body: object = None) -> Any:
        """Call the admin API as the admin; fail the test on an error status."""
        response = httpx.request(
            method, f"{self.base_url}{path}", json=body,
            headers={"Authorization": f"Bearer {self.api_key}"}, timeout=60,
        )  # fmt: skip
        assert response.status_code < 400, (method, path, response.status_code, response.text)
        return response.json()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def children(self) -> list[int]:
        path = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        try:
            return [int(pid) for pid in path.read_text().split()]
        except OSError:
            return []

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_keel(
    data_dir: Path, *args: str, ready_timeout: float = 180, env: dict[str, str] | None = None
) -> KeelProcess:
    """Run `keel serve` on a free port; return once /readyz says ready."""
    port = free_port()
    log_path = data_dir.parent / f"{data_dir.name}-serve.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "KEEL_CONFIG": "/dev/null", **(env or {})}
    command = [sys.executable, "-m", "keel", "serve", "--port", str(port),
               "--data-dir", str(data_dir), *args]  # fmt: skip
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    keel = KeelProcess(process, f"http://127.0.0.1:{port}", data_dir, log_path)
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"keel serve exited with {process.returncode}:\n{keel.log()}")
        try:
            if httpx.get(f"{keel.base_url}/readyz", timeout=2).status_code == 200:
                return keel
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    keel.stop(signal.SIGKILL)
    raise RuntimeError(f"keel serve not ready after {ready_timeout}s:\n{keel.log()}")
