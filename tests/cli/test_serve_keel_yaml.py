"""One keel.yaml, read by `keel serve -c` at start: settings and declarations side by side.

A real `keel serve` process over two stub upstream processes (no model behind them): the
split, export → apply, and a SIGKILLed upstream seen in /readyz, the console and the log.
"""

from __future__ import annotations

import collections
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from keel.deploy.llamacpp import free_port
from tests.support.keel_process import KeelProcess, start_keel
from tests.support.stub_server import StubProcess

KEEL_YAML = """\
# Settings
local_model: false
embeddings: false
breaker_failures: 3
breaker_cooldown: 30

# Declarations
providers:
  - name: primary
    kind: openai_compat
    base_url: {primary}
  - name: secondary
    kind: openai_compat
    base_url: {secondary}
models:
  - name: chat
    provider: primary
    upstream_model: small
  - name: chat
    provider: secondary
    upstream_model: large
routes:
  - name: chat-default
    targets: {{chat@1: 90, chat@2: 10}}
    sticky: user
    retries: 0
prompts:
  - name: greet
    messages:
      - role: system
        content: Greet the user by name.
    labels: {{production: latest}}
"""


@pytest.fixture(scope="module")
def stubs() -> Iterator[dict[str, StubProcess]]:
    started = {name: StubProcess(name, free_port()).start() for name in ("primary", "secondary")}
    yield started
    for stub in started.values():
        stub.stop()


@pytest.fixture(scope="module")
def keel(
    tmp_path_factory: pytest.TempPathFactory, stubs: dict[str, StubProcess]
) -> Iterator[tuple[KeelProcess, Path]]:
    folder = tmp_path_factory.mktemp("keel-yaml")
    path = folder / "keel.yaml"
    path.write_text(KEEL_YAML.format(primary=stubs["primary"].base_url,
                                     secondary=stubs["secondary"].base_url))  # fmt: skip
    process = start_keel(folder / "data", "-c", str(path), ready_timeout=120)
    yield process, path
    process.stop()


def chat(client: httpx.Client, key: str, user: str) -> httpx.Response:
    return client.post(
        "/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={
            "model": "chat-default",
            "user": user,
            "messages": [{"role": "user", "content": "hi"}],
        },
    )


def cli(
    keel: KeelProcess, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {"KEEL_DATA_DIR": str(keel.data_dir), "KEEL_URL": keel.base_url,
           "KEEL_CONFIG": "/dev/null", "COLUMNS": "200", "PATH": "/usr/bin:/bin"}  # fmt: skip
    return subprocess.run([sys.executable, "-m", "keel", *args], capture_output=True, text=True,
                          env=env, input=stdin, timeout=120)  # fmt: skip


def test_serve_starts_with_everything_declared_and_splits_90_10(
    keel: tuple[KeelProcess, Path],
) -> None:
    process, _ = keel
    route = process.api("GET", "/api/routes/chat-default")
    assert route["targets"] == {"chat@1": 90, "chat@2": 10}
    assert [p["name"] for p in process.api("GET", "/api/providers")] == ["primary", "secondary"]
    prompt = process.api("GET", "/api/prompts")["data"][0]
    assert (prompt["name"], prompt["labels"]["production"]) == ("greet", 1)
    served: collections.Counter[str] = collections.Counter()
    with httpx.Client(base_url=process.base_url, timeout=30) as client:
        for i in range(1000):
            response = chat(client, process.api_key, f"user-{i}")
            assert response.status_code == 200, response.text
            served[response.headers["X-Keel-Target"]] += 1
    # Sticky by user: each of the 1,000 users is hashed to one arm, so the count is fixed.
    assert abs(served["chat@1"] / 10 - 90) <= 3, served
    assert served["chat@1"] + served["chat@2"] == 1000


def test_export_then_apply_says_no_changes(keel: tuple[KeelProcess, Path], tmp_path: Path) -> None:
    process, _ = keel
    exported = cli(process, "export")
    assert exported.returncode == 0, exported.stderr
    path = tmp_path / "exported.yaml"
    path.write_text(exported.stdout)
    applied = cli(process, "apply", "-f", str(path))
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.strip().splitlines()[-1] == "no changes"


def test_a_restart_with_the_same_file_changes_nothing(
    keel: tuple[KeelProcess, Path], tmp_path: Path
) -> None:
    process, path = keel
    before = len(process.api("GET", "/api/audit?limit=1000")["data"])
    applied = cli(process, "apply", "-f", str(path))  # what a restart applies, idempotently
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.strip().splitlines()[-1] == "no changes"
    assert len(process.api("GET", "/api/audit?limit=1000")["data"]) == before


def test_a_killed_upstream_shows_unhealthy_within_one_breaker_window(
    keel: tuple[KeelProcess, Path], stubs: dict[str, StubProcess]
) -> None:
    process, _ = keel
    stubs["secondary"].kill()
    users = [f"user-{i}" for i in range(1000)]
    failed_attempts = 0
    with httpx.Client(base_url=process.base_url, timeout=30) as client:
        for user in users:
            response = chat(client, process.api_key, user)
            assert response.status_code == 200, response.text  # failed over to chat@1
            if response.headers["X-Keel-Attempts"] != "1":
                failed_attempts += 1
            if failed_attempts == 3:  # breaker_failures: the breaker is open now
                break
        ready = client.get("/readyz")
        assert ready.status_code == 200
        body = ready.json()
        assert body["unhealthy"] == ["chat@2"]
        assert body["targets"]["chat@2"]["state"] == "open"
        assert body["targets"]["chat@2"]["failures_per_minute"] == 3
        page = console_routes(client, process.api_key)
    assert re.search(r'data-health="chat@2">unhealthy \(breaker open, 3 failures/min\)', page)
    assert re.search(r'data-health="chat@1">healthy', page)
    log = process.log()
    assert log.count("circuit breaker of chat@2 opened after 3 consecutive failures") == 1
    # Stats count the dead target's failed attempts, though failover saved every request.
    assert failed_attempts_in_stats(process, "chat@2", expect=3) == 3


def failed_attempts_in_stats(keel: KeelProcess, target: str, expect: int) -> int:
    """The target's failed attempts in /api/stats by model, once the recorder wrote them
    (`expect` of them, or whatever is there after 30 s)."""
    headers = {"Authorization": f"Bearer {keel.api_key}"}
    params = {"since": "1h", "bucket": "0", "by": "model"}
    deadline = time.monotonic() + 30  # traces are written in batches, off the request path
    with httpx.Client(base_url=keel.base_url, timeout=30) as client:
        while True:
            response = client.get("/api/stats", params=params, headers=headers)
            assert response.status_code == 200, response.text
            rows = {row["group"]: row for row in response.json()["data"]}
            failed = int(rows.get(target, {}).get("failed_attempts", 0))
            if failed >= expect or time.monotonic() > deadline:
                return failed
            time.sleep(0.2)


def console_routes(client: httpx.Client, key: str) -> str:
    form = client.get("/ui/login").text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form)
    assert csrf is not None
    client.post("/ui/login", data={"api_key": key, "csrf_token": csrf.group(1), "next": "/ui/"})
    page = client.get("/ui/routes")
    assert page.status_code == 200
    return page.text


def test_serve_refuses_a_wrong_declaration_and_says_where(tmp_path: Path) -> None:
    path = tmp_path / "keel.yaml"
    path.write_text("local_model: false\nembeddings: false\nroutes:\n"
                    "  - name: chat\n    targets: {ghost@1: 1}\n")  # fmt: skip
    with pytest.raises(RuntimeError) as info:
        start_keel(tmp_path / "data", "-c", str(path), ready_timeout=60)
    assert f"{path}:5: routes[0].targets: unknown model version 'ghost@1'" in str(info.value)
    assert "nothing was changed" in str(info.value)
