"""A fake OpenAI-compatible upstream as its own process: `python -m tests.support.stub_server`.

Used where a test needs upstreams it can SIGKILL (routing and fault tolerance); answers
say which upstream served them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support.upstream import FakeUpstream


async def _serve(port: int, name: str) -> None:
    fake = FakeUpstream(reply=f"served by {name}")
    fake.fixed_port = port
    await fake.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await fake.stop()


class StubProcess:
    """Start, kill and restart one stub upstream process on a fixed port."""

    def __init__(self, name: str, port: int):
        self.name, self.port = name, port
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> StubProcess:
        root = Path(__file__).resolve().parents[2]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.stub_server", "--port", str(self.port),
             "--name", self.name],
            cwd=root, env={**os.environ, "PYTHONPATH": str(root)},
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                httpx.post(f"{self.base_url}/chat/completions", json={"messages": []}, timeout=1)
                return self
            time.sleep(0.05)
        raise RuntimeError(f"stub {self.name} did not start on port {self.port}")

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", required=True)
    args = parser.parse_args()
    asyncio.run(_serve(args.port, args.name))


if __name__ == "__main__":
    main()
