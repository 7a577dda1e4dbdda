"""The supervisor against the real llama.cpp server and the bundled model."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from keel.deploy.bundled import smollm2_gguf
from keel.deploy.llamacpp import LlamaCppServer, LlamaServerConfig, ModelServerFailed


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it has exited all the same.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except OSError:
        return False


async def wait_for(condition: Callable[[], bool], seconds: float = 60.0) -> None:
    async with asyncio.timeout(seconds):
        while not condition():  # noqa: ASYNC110 - polling state the supervisor owns
            await asyncio.sleep(0.05)


async def completion(base_url: str) -> str:
    async with aiohttp.ClientSession() as session:
        response = await session.post(
            f"{base_url}/chat/completions",
            json={"messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 5},
        )
        body = await response.json()
        return str(body["choices"][0]["message"]["content"])


@pytest.fixture
async def server(tmp_path: Path):  # type: ignore[no-untyped-def]
    supervised = LlamaCppServer(
        LlamaServerConfig(
            model_path=smollm2_gguf(), model_alias="smollm2", log_path=tmp_path / "llama.log"
        )
    )
    await supervised.start()
    yield supervised
    await supervised.stop()


async def test_starts_ready_and_answers(server: LlamaCppServer) -> None:
    assert server.ready
    assert await completion(server.base_url)


async def test_restarts_after_the_child_is_killed(server: LlamaCppServer) -> None:
    first_pid = server.pid
    assert first_pid is not None
    os.kill(first_pid, signal.SIGKILL)
    await wait_for(lambda: not server.ready, seconds=5)
    assert server.state == "restarting"
    await wait_for(lambda: server.ready)
    assert server.pid != first_pid
    assert server.restarts == 1
    assert server.last_exit_code == -signal.SIGKILL
    assert await completion(server.base_url)


async def test_stop_leaves_no_process_behind(tmp_path: Path) -> None:
    supervised = LlamaCppServer(
        LlamaServerConfig(
            model_path=smollm2_gguf(), model_alias="smollm2", log_path=tmp_path / "llama.log"
        )
    )
    await supervised.start()
    pid = supervised.pid
    assert pid is not None
    await supervised.stop()
    assert not alive(pid)
    assert supervised.state == "stopped"


async def test_a_model_that_cannot_load_fails_with_the_servers_words(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a gguf file")
    supervised = LlamaCppServer(
        LlamaServerConfig(model_path=broken, model_alias="x", log_path=tmp_path / "llama.log")
    )
    with pytest.raises(ModelServerFailed, match="exited with code"):
        await supervised.start()
    assert supervised.state == "failed"
