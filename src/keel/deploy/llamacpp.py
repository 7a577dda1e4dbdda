"""Supervise a llama.cpp server (llama-cpp-python's OpenAI-compatible server) as a child.

The gateway reaches it over HTTP like any upstream. A process counts as ready only once it
has generated one token (its self-test), so a model that crashes at its first inference
fails at start-up with its cause, not on a user's request. A dead process is restarted
with capped exponential backoff, forever; too many crashes in a short window mark the
server crashlooping (see crashes.py). Each process writes its own log; earlier ones are
rotated, never overwritten. On Linux the child also gets PR_SET_PDEATHSIG, so even a
SIGKILLed gateway leaves no orphan behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import shlex
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import aiohttp

from keel.deploy import logs
from keel.deploy.crashes import Crash, CrashHistory, Phase, RestartPolicy, describe_exit

log = logging.getLogger("keel.deploy.llamacpp")

State = Literal["stopped", "starting", "ready", "restarting", "crashlooping"]

LLAMA_CPP_SERVER = (sys.executable, "-m", "llama_cpp.server")
SELF_TEST = {"prompt": "Hello", "max_tokens": 1, "temperature": 0.0}
# A self-test that failed because the process is dying is that death, not a bad answer:
# wait this long for the exit to be seen before calling it a failed self-test.
EXIT_GRACE = 2.0


class ModelServerFailed(RuntimeError):
    """A start of the model server failed; the message says why and what it printed."""


class _StartFailed(Exception):
    def __init__(self, cause: str, exit_code: int | None):
        super().__init__(cause)
        self.cause = cause
        self.exit_code = exit_code


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
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    logs_kept: int = 5
    # The argv that runs the server, before its options; a test puts a stand-in here.
    launcher: tuple[str, ...] = LLAMA_CPP_SERVER


class LlamaCppServer:
    """One supervised llama.cpp server: its current process, state and crash history.

    Invariant while supervised: the supervisor holds a process (`pid`) or has a restart
    scheduled (`next_restart_at`); it releases a dead process and schedules its restart
    in one step.
    """

    def __init__(
        self,
        config: LlamaServerConfig,
        progress: Callable[[str], None] | None = None,
        on_crash: Callable[[Crash], None] | None = None,
    ):
        self.config = config
        self.port = config.port or free_port(config.host)
        self.state: State = "stopped"
        self.restarts = 0
        self.crashes = CrashHistory(config.restart)
        # When the next process start is due (wall clock, like Crash.at): set from the moment
        # one is scheduled until its process exists.
        self.next_restart_at: float | None = None
        self._progress = progress or (lambda message: log.info(message))
        self._on_crash = on_crash or (lambda crash: None)
        self._process: asyncio.subprocess.Process | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._first_done = asyncio.Event()
        self._first_error: ModelServerFailed | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.config.host}:{self.port}/v1"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    @property
    def last_exit_code(self) -> int | None:
        return self.crashes.last.exit_code if self.crashes.last else None

    def _command(self) -> list[str]:
        threads = self.config.n_threads or os.cpu_count() or 1
        return [
            *self.config.launcher,
            "--model", str(self.config.model_path),
            "--model_alias", self.config.model_alias,
            "--host", self.config.host,
            "--port", str(self.port),
            "--n_ctx", str(self.config.n_ctx),
            "--n_threads", str(threads),
        ]  # fmt: skip

    async def start(self) -> None:
        """Start supervising; return once the first process has passed its self-test.

        Raises ModelServerFailed, with the cause and the log's last lines, when that first
        start fails. The supervisor keeps retrying in the background until stop().
        """
        if self._supervisor is not None:
            raise RuntimeError(f"{self.config.model_alias} is already supervised; stop() it first")
        self._first_done.clear()
        self._first_error = None
        self.state = "starting"
        self.next_restart_at = time.time()  # the first start is due now
        self._supervisor = asyncio.create_task(
            self._supervise(), name=f"llamacpp-supervisor:{self.config.model_alias}"
        )
        self._supervisor.add_done_callback(self._supervisor_ended)
        await self._first_done.wait()
        if self._first_error is not None:
            raise self._first_error

    async def _supervise(self) -> None:
        while True:
            crash = await self._run_once()
            # No await from here to the sleep: the dead process is released and its
            # restart scheduled in the same step, so no one sees a replica with neither.
            was_crashlooping = self.crashes.crashlooping
            delay = self.crashes.record(crash)
            pid = self.pid
            self._process = None
            self.next_restart_at = time.time() + delay
            self.state = "crashlooping" if self.crashes.crashlooping else "restarting"
            self._report(crash, pid, delay, entered_crashloop=not was_crashlooping)
            await asyncio.sleep(delay)
            self.restarts += 1

    async def _run_once(self) -> Crash:
        """Start one process, supervise it until it ends, and say why it ended."""
        try:
            process = await self._spawn()
        except Exception as exc:  # a missing executable, a full disk: retried like a crash
            return self._crash(f"could not be started: {exc}", "starting", None)
        self._process = process
        self.next_restart_at = None
        phase: Phase = "starting"
        try:
            await self._until_ready(process)
            phase = "serving"
            self.crashes.recovered()
            self.state = "ready"
            self._first_start_done(None)
            code = await process.wait()
            return self._crash(f"{describe_exit(code)} while serving", phase, code)
        except _StartFailed as failed:
            return self._crash(failed.cause, phase, failed.exit_code)
        except Exception as exc:  # a bug here must not end supervision: count it, restart
            log.exception("supervising the llama.cpp server (pid %s) failed", process.pid)
            await self._terminate(process)
            return self._crash(f"supervisor error: {exc!r}", phase, process.returncode)

    async def _spawn(self) -> asyncio.subprocess.Process:
        path = self.config.log_path
        path.parent.mkdir(parents=True, exist_ok=True)
        logs.rotate(path, self.config.logs_kept)
        command = self._command()
        with path.open("ab") as log_file:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            log_file.write(f"# keel {stamp}: {shlex.join(command)}\n".encode())
            log_file.flush()
            process = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                preexec_fn=_die_with_parent,
                # Unbuffered output and faulthandler: a process killed by a signal still
                # leaves its last lines, and a Python traceback, in the log.
                env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
                     "PYTHONFAULTHANDLER": "1"},
            )  # fmt: skip
        name = self.config.model_path.name
        self._progress(f"starting llama.cpp server for {name} (pid {process.pid})")
        return process

    async def _until_ready(self, process: asyncio.subprocess.Process) -> None:
        """Wait for the server to answer and generate one token; raise _StartFailed if not."""
        started = time.monotonic()
        exited = asyncio.ensure_future(process.wait())
        probe = asyncio.ensure_future(self._probe())
        try:
            done, _ = await asyncio.wait(
                {exited, probe}, timeout=self.config.ready_timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )  # fmt: skip
            if exited in done:
                code = exited.result()
                raise _StartFailed(f"{describe_exit(code)} while starting", code)
            if probe in done:
                error = probe.exception()
                if error is None:
                    elapsed = time.monotonic() - started
                    self._progress(f"llama.cpp server ready on {self.base_url} in {elapsed:.1f}s")
                    return
                await asyncio.wait({exited}, timeout=EXIT_GRACE)
                if exited.done():
                    code = exited.result()
                    raise _StartFailed(f"{describe_exit(code)} during its self-test", code)
                await self._terminate(process)
                raise _StartFailed(f"failed its self-test: {error}", None)
            await self._terminate(process)
            raise _StartFailed(
                f"was not ready after {self.config.ready_timeout:.0f}s (local_model_ready_timeout)",
                None,
            )
        finally:
            exited.cancel()
            probe.cancel()

    async def _probe(self) -> None:
        async with aiohttp.ClientSession() as session:
            while not await self._answers(session):  # noqa: ASYNC110 - polling over HTTP
                await asyncio.sleep(0.1)
            await self._self_test(session)

    async def _answers(self, session: aiohttp.ClientSession) -> bool:
        try:
            async with session.get(
                f"{self.base_url}/models", timeout=aiohttp.ClientTimeout(total=2)
            ) as response:
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def _self_test(self, session: aiohttp.ClientSession) -> None:
        """One token of completion: proves the model loads and runs, at the cost of one."""
        body = {"model": self.config.model_alias, **SELF_TEST}
        try:
            async with session.post(
                f"{self.base_url}/completions", json=body, timeout=aiohttp.ClientTimeout()
            ) as response:
                status, text = response.status, await response.text()
        except aiohttp.ClientError as exc:
            raise RuntimeError(f"the one-token completion got no answer ({exc})") from exc
        if status != 200:
            raise RuntimeError(f"the one-token completion answered HTTP {status}: {text[:300]}")
        try:
            choices = json.loads(text).get("choices")
        except (ValueError, AttributeError):
            choices = None
        if not choices:
            raise RuntimeError(f"the one-token completion answered without choices: {text[:300]}")

    def _crash(self, cause: str, phase: Phase, exit_code: int | None) -> Crash:
        path = self.config.log_path
        return Crash(cause, phase, exit_code, str(path), logs.tail(path))

    def _report(
        self, crash: Crash, pid: int | None, delay: float, *, entered_crashloop: bool
    ) -> None:
        self._on_crash(crash)
        what = f"llama.cpp server for {self.config.model_alias} (pid {pid}) {crash.cause}"
        where = f"{crash.log_path} (kept as {Path(crash.log_path).name}.1 after the restart)"
        tail = "\n".join(crash.log_tail)
        if not self._first_done.is_set():
            self._first_start_done(ModelServerFailed(f"{what}; see {where}:\n{tail}"))
        if self.crashes.crashlooping and entered_crashloop:
            policy = self.crashes.policy
            log.error(
                "%s; crashlooping (%d crashes within %.0fs), retrying every %.1fs; "
                "last lines of %s:\n%s",
                what, policy.crashloop_crashes, policy.crashloop_window, delay, where, tail,
            )  # fmt: skip
        else:
            log.warning("%s; restarting in %.1fs; see %s", what, delay, where)

    def _first_start_done(self, error: ModelServerFailed | None) -> None:
        if not self._first_done.is_set():
            self._first_error = error
            self._first_done.set()

    def _supervisor_ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        # _run_once catches every Exception; reaching here is a bug. Say so loudly rather
        # than leave a replica that claims to be restarting.
        log.critical(
            "the supervisor of the llama.cpp server for %s ended; restart Keel",
            self.config.model_alias, exc_info=task.exception(),
        )  # fmt: skip
        self.state = "stopped"
        self.next_restart_at = None
        self._first_start_done(ModelServerFailed(f"its supervisor ended: {task.exception()!r}"))

    async def _terminate(
        self, process: asyncio.subprocess.Process | None, grace: float = 5.0
    ) -> None:
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            await asyncio.wait_for(process.wait(), grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()

    async def stop(self) -> None:
        """Stop supervising and end the child: SIGTERM, then SIGKILL after a grace period."""
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None:
            supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await supervisor
        await self._terminate(self._process)
        self._process = None
        self.next_restart_at = None
        self.state = "stopped"
        self._first_start_done(ModelServerFailed("the llama.cpp server was stopped while starting"))
