"""`keel serve --workers N`: refused where workers would disagree, else N uvicorn processes."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from typer.testing import CliRunner

from keel.cli import serve as serve_module
from keel.cli.app import app

runner = CliRunner()


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    """What uvicorn was asked to run (nothing really starts)."""
    calls: list[dict[str, Any]] = []

    def run(target: str, **options: Any) -> None:
        calls.append({"target": target, **options})

    def server(*_: Any, **__: Any) -> None:
        raise AssertionError("a single-process server was started")

    monkeypatch.setattr(serve_module.uvicorn, "run", run)
    monkeypatch.setattr(serve_module.uvicorn, "Server", server)
    # Set, then removed: so what `keel serve` sets for its workers is undone afterwards.
    monkeypatch.setenv(serve_module._WORKER_SPEC, "")
    monkeypatch.delenv(serve_module._WORKER_SPEC)
    umask = os.umask(0o022)  # `keel serve` tightens the process's umask: give it back after
    os.umask(umask)
    yield calls
    os.umask(umask)


def test_several_workers_without_redis_are_refused_with_how_to_scale_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, started: list[dict[str, Any]]
) -> None:
    monkeypatch.delenv("KEEL_REDIS_URL", raising=False)
    monkeypatch.setenv("COLUMNS", "400")
    result = runner.invoke(
        app, ["serve", "--workers", "4", "--no-local-model", "--data-dir", str(tmp_path)]
    )
    assert result.exit_code == 2
    message = " ".join(result.output.split())
    assert "--workers 4 needs KEEL_REDIS_URL" in message
    assert "rate limits" in message
    assert "replicas behind a load balancer" in message
    assert started == []
    assert not (tmp_path / "admin.key").exists()  # nothing was set up either


def test_several_workers_with_the_bundled_model_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, started: list[dict[str, Any]]
) -> None:
    monkeypatch.setenv("KEEL_REDIS_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("COLUMNS", "400")
    result = runner.invoke(app, ["serve", "--workers", "2", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2
    message = " ".join(result.output.split())
    assert "--workers 2 needs --no-local-model" in message
    assert "KEEL_REDIS_URL (" not in message  # Redis is there: only what is missing is named
    assert started == []


def test_zero_workers_is_a_usage_error(started: list[dict[str, Any]]) -> None:
    result = runner.invoke(app, ["serve", "--workers", "0"])
    assert result.exit_code == 2
    assert started == []


def test_several_workers_with_redis_start_that_many_processes_on_one_setup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, started: list[dict[str, Any]]
) -> None:
    monkeypatch.setenv("KEEL_REDIS_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("KEEL_REQUEST_HEADER_TIMEOUT", "7")
    monkeypatch.setattr(serve_module.WorkerProtocol, "header_timeout", 10.0)  # undone after
    flags = ["--no-local-model", "--no-embeddings", "--data-dir", str(tmp_path)]
    result = runner.invoke(app, ["serve", "--workers", "3", "--port", "8123", *flags])
    assert result.exit_code == 0, result.output
    [call] = started
    assert call["target"] == "keel.cli.serve:worker_app"
    assert (call["factory"], call["workers"], call["port"]) == (True, 3, 8123)
    assert call["http"] == "keel.cli.serve:WorkerProtocol"  # by name: workers are spawned
    # The store and the first admin key were set up once, before the workers started.
    assert (tmp_path / "admin.key").read_text().strip() in result.output
    assert (tmp_path / "keel.db").exists()

    # Each worker builds its app from the same flags, handed down in its environment.
    spec = json.loads(os.environ[serve_module._WORKER_SPEC])
    assert spec["flags"]["data_dir"] == str(tmp_path)
    assert spec["flags"]["port"] == 8123
    worker = serve_module.worker_app()
    assert isinstance(worker, FastAPI)
    assert serve_module.WorkerProtocol.header_timeout == 7  # the header deadline holds there too
