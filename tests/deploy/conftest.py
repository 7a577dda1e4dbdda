"""A stand-in model server that crashes on cue, and a way to wait on supervisor state."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from keel.deploy.crashes import RestartPolicy
from keel.deploy.llamacpp import LlamaServerConfig

STANDIN = Path(__file__).with_name("standin_server.py")
# Short waits so a crash loop takes a second, not minutes; 3 crashes make one.
FAST = RestartPolicy(backoff=0.05, backoff_max=0.2, crashloop_crashes=3, crashloop_window=60)


@dataclass(frozen=True)
class Standin:
    folder: Path
    crash_flag: Path  # while it exists, every completion kills the stand-in with SIGSEGV

    @property
    def error_flag(self) -> Path:  # while it exists, every completion answers HTTP 500
        return self.folder / "error"

    @property
    def launcher(self) -> tuple[str, ...]:
        return (sys.executable, str(STANDIN), "--crash-flag", str(self.crash_flag),
                "--error-flag", str(self.error_flag))  # fmt: skip

    def config(self, name: str = "standin") -> LlamaServerConfig:
        return LlamaServerConfig(
            model_path=self.folder / f"{name}.gguf",
            model_alias=name,
            log_path=self.folder / "logs" / f"llama-{name}-0.log",
            ready_timeout=60,
            restart=FAST,
            launcher=self.launcher,
        )


@pytest.fixture
def standin(tmp_path: Path) -> Standin:
    """A stand-in that crashes at its first completion until the test removes the flag."""
    flag = tmp_path / "crash"
    flag.touch()
    return Standin(tmp_path, flag)


async def wait_for(condition: Callable[[], bool], seconds: float = 60.0) -> None:
    async with asyncio.timeout(seconds):
        while not condition():  # noqa: ASYNC110 - polling state the supervisor owns
            await asyncio.sleep(0.02)
