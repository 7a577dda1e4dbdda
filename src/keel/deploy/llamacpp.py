"""Supervise a llama.cpp server (llama-cpp-python's OpenAI-compatible server) as a child.

The gateway reaches it over HTTP like any upstream. The supervisor waits for readiness,
restarts the child when it dies (with backoff), and stops it on shutdown. On Linux the
child also gets PR_SET_PDEATHSIG, so even a SIGKILLed gateway leaves no orphan behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import aiohttp

log = logging.getLogger("keel.deploy.llamacpp")

State = Literal["stopped", "starting", "ready", "restarting", "failed"]


class ModelServerFailed(RuntimeError):
    """The model server could not be made ready; the message says what it printed."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


@dataclass(frozen=True)
class LlamaServerConfig:
    model_path: Path
    model_alias: str
    log_path: Path
    host: str = "127.0.0.1"
    port: int = 0
    n_ctx: int = 2048
    n_threads: int = 0
    ready_timeout: float = 120.0
    python: str = sys.executable


class LlamaCppServer:
    """One supervised llama.cpp server process and its lifecycle state."""

    def __init__(self, config: LlamaServerConfig, progress: Callable[[str], None] | None = None):
        self.config = config
        self.port = config.port or free_port(config.host)
        self.state: State = "stopped"
        self.restarts = 0
        self.last_exit_code: int | None = None
        self._progress = progress or (lambda message: log.info(message))
        self._process: asyncio.subprocess.Process | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def base_url(self) -> str:
        return f"http://{self.config.host}:{self.port}/v1"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    def _command(self) -> list[str]:
        threads = self.config.n_threads or os.cpu_count() or 1
        return [
            self.config.python, "-m", "llama_cpp.server",
            "--model", str(self.config.model_path),
            "--model_alias", self.config.model_alias,
            "--host", self.config.host,
            "--port", str(self.port),
            "--n_ctx", str(self.config.n_ctx),
            "--n_threads", str(threads),
        ]  # fmt: skip

    async def start(self) -> None:
        """Start the child and wait until it answers; raise ModelServerFailed if it cannot."""
        self._stopping = False
        self.state = "starting"
        await self._spawn_and_wait()
        self._watcher = asyncio.create_task(self._watch(), name="llamacpp-supervisor")

    async def _spawn_and_wait(self) -> None:
        self.config.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.config.log_path.open("ab") as log_file:
            self._process = await asyncio.create_subprocess_exec(
                *self._command(),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                preexec_fn=_die_with_parent,
                env={**os.environ, "HF_HUB_OFFLINE": "1"},
            )
        name = self.config.model_path.name
        self._progress(f"starting llama.cpp server for {name} (pid {self._process.pid})")
        started = time.monotonic()
        async with aiohttp.ClientSession() as session:
            while True:
                if self._process.returncode is not None:
                    self.state = "failed"
                    raise ModelServerFailed(
                        f"llama.cpp server exited with code {self._process.returncode} while "
                        f"starting; see {self.config.log_path}:\n{self._log_tail()}"
                    )
                elapsed = time.monotonic() - started
                if elapsed > self.config.ready_timeout:
                    await self._terminate()
                    self.state = "failed"
                    raise ModelServerFailed(
                        f"llama.cpp server not ready after {self.config.ready_timeout:.0f}s; "
                        f"see {self.config.log_path}"
                    )
                if await self._answers(session):
                    self.state = "ready"
                    self._progress(f"llama.cpp server ready on {self.base_url} in {elapsed:.1f}s")
                    return
                await asyncio.sleep(0.1)

    async def _answers(self, session: aiohttp.ClientSession) -> bool:
        try:
            async with session.get(
                f"{self.base_url}/models", timeout=aiohttp.ClientTimeout(total=2)
            ) as response:
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    def _log_tail(self, lines: int = 15) -> str:
        try:
            text = self.config.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    async def _watch(self) -> None:
        backoff = 0.5
        while not self._stopping:
            assert self._process is not None
            ready_since = time.monotonic()
            code = await self._process.wait()
            if self._stopping:
                return
            self.last_exit_code = code
            self.state = "restarting"
            if time.monotonic() - ready_since > 30:
                backoff = 0.5
            log.warning(
                "llama.cpp server (pid %s) exited with code %s; restarting in %.1fs",
                self._process.pid, code, backoff,
            )  # fmt: skip
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)
            try:
                await self._spawn_and_wait()
                self.restarts += 1
            except ModelServerFailed as exc:
                log.error("%s", exc)
                self.state = "restarting"

    async def _terminate(self, grace: float = 5.0) -> None:
        process = self._process
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), grace)
        except TimeoutError:
            process.kill()
            await process.wait()

    async def stop(self) -> None:
        """Stop supervising and end the child: SIGTERM, then SIGKILL after a grace period."""
        self._stopping = True
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        await self._terminate()
        self.state = "stopped"
