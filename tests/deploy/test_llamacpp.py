"""The supervisor, against the real llama.cpp server and the bundled model, and against a
stand-in server that crashes at its first inference."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import aiohttp
import pytest

from keel.deploy.bundled import smollm2_gguf
from keel.deploy.llamacpp import LlamaCppServer, LlamaServerConfig, ModelServerFailed
from tests.deploy.conftest import Standin, wait_for


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
    try:
        with pytest.raises(ModelServerFailed, match="exited with code"):
            await supervised.start()
        # Never given up on: a restart is scheduled (the file may be fixed in place).
        assert supervised.state in ("restarting", "crashlooping")
        assert supervised.pid is not None or supervised.next_restart_at is not None
    finally:
        await supervised.stop()
    assert supervised.state == "stopped"


async def test_the_real_server_passes_its_one_token_self_test_before_it_counts_as_ready(
    tmp_path: Path,
) -> None:
    supervised = LlamaCppServer(
        LlamaServerConfig(
            model_path=smollm2_gguf(), model_alias="smollm2", log_path=tmp_path / "llama.log"
        )
    )
    await supervised.start()
    try:
        assert supervised.ready
        log = (tmp_path / "llama.log").read_text(errors="replace")
        assert "POST /v1/completions" in log  # the self-test reached the model
    finally:
        await supervised.stop()


async def test_a_model_that_crashes_at_its_first_inference_fails_its_start_with_the_cause(
    standin: Standin,
) -> None:
    supervised = LlamaCppServer(standin.config())
    try:
        with pytest.raises(ModelServerFailed) as failed:
            await supervised.start()
        message = str(failed.value)
        assert "killed by SIGSEGV (exit code -11)" in message
        assert "standin: crashing on /v1/completions" in message  # the log's last lines
        assert supervised.state in ("restarting", "crashlooping")
        assert supervised.crashes.last is not None
        assert supervised.crashes.last.phase == "starting"
    finally:
        await supervised.stop()


async def test_a_crashed_servers_log_survives_its_restart(
    standin: Standin, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("PYTHONUNBUFFERED", "PYTHONFAULTHANDLER"):  # Keel must set them itself
        monkeypatch.delenv(name, raising=False)
    config = standin.config()
    supervised = LlamaCppServer(config)
    try:
        with pytest.raises(ModelServerFailed):
            await supervised.start()
        standin.crash_flag.unlink()
        await wait_for(lambda: supervised.ready)
    finally:
        await supervised.stop()
    crashed = config.log_path.with_name(config.log_path.name + ".1").read_text()
    # Written without a flush just before the signal: kept because output is unbuffered.
    assert "standin: crashing on /v1/completions" in crashed
    assert "Fatal Python error: Segmentation fault" in crashed  # faulthandler's traceback
    current = config.log_path.read_text()
    assert "standin: serving" in current
    assert "crashing" not in current


async def test_a_server_that_answers_its_self_test_with_an_error_is_stopped_and_retried(
    standin: Standin,
) -> None:
    standin.crash_flag.unlink()
    standin.error_flag.touch()
    supervised = LlamaCppServer(standin.config())
    try:
        with pytest.raises(ModelServerFailed, match=r"failed its self-test: .*HTTP 500"):
            await supervised.start()
        crash = supervised.crashes.last
        assert crash is not None
        assert crash.exit_code is None  # Keel stopped it; it did not die on its own
        assert not supervised.ready
        standin.error_flag.unlink()
        await wait_for(lambda: supervised.ready)
        assert supervised.restarts >= 1
    finally:
        await supervised.stop()
