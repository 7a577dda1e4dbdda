"""Start the systems that bench/compare.py, soak.py and no_loss.py put in front of the stub.

Each starter returns a `System`: where to send chat requests, with which key, and the pid
whose process tree is the system (for RSS). All processes belong to an `overhead.Children`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from overhead import (
    BENCH_DIR,
    BENCH_LIMITS,
    BenchError,
    Children,
    _keel_executable,
    free_port,
    wait_until_ready,
)

ROUTE = "stub"  # what every system is asked for, so the request body is the same everywhere
LITELLM_SPEC = "litellm[proxy]==1.108.7"
LITELLM_VENV = Path.home() / ".cache" / "keel-bench" / "litellm-venv"
LITELLM_MASTER_KEY = "sk-keel-bench-master"


@dataclass(frozen=True, slots=True)
class System:
    name: str
    url: str  # base URL ending in /v1
    api_key: str | None
    pid: int  # root of the process tree measured for RSS
    description: str


# -- process memory ------------------------------------------------------------------------


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants, from /proc (children of every thread)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                text = Path(f"/proc/{current}/task/{task}/children").read_text()
            except OSError:
                continue
            todo.extend(int(child) for child in text.split())
    return found


def rss_bytes(pid: int) -> int:
    """Resident memory summed over the process tree (pages shared after fork count twice)."""
    total = 0
    for member in process_tree(pid):
        try:
            status = Path(f"/proc/{member}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
                break
    return total


def cpu_seconds(pid: int) -> float:
    """User + system CPU time summed over the process tree (all threads), from /proc."""
    total = 0
    for member in process_tree(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


# -- admin calls -----------------------------------------------------------------------------


def _call(base_url: str, key: str, method: str, path: str, body: object) -> Any:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(
        base_url.removesuffix("/v1") + path,
        data=json.dumps(body).encode(),
        method=method,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    try:
        with opener.open(request, timeout=30) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:500]
        raise BenchError(f"{method} {path} on Keel failed: HTTP {exc.code} {detail}") from exc


def configure_route(base_url: str, admin_key: str, stub_url: str) -> None:
    """Two providers on the same stub, a model version on each, one route split 50/50."""
    for provider in ("stub-a", "stub-b"):
        _call(
            base_url,
            admin_key,
            "PUT",
            f"/api/providers/{provider}",
            {"kind": "openai_compat", "base_url": stub_url},
        )
        _call(
            base_url,
            admin_key,
            "POST",
            "/api/models",
            {"name": "stub-model", "provider": provider, "upstream_model": "stub"},
        )
    _call(
        base_url,
        admin_key,
        "PUT",
        f"/api/routes/{ROUTE}",
        {"targets": {"stub-model@1": 50, "stub-model@2": 50}},
    )


def limited_app_key(base_url: str, admin_key: str) -> str:
    """An app key with RPM, TPM, concurrency limits and a budget, all too high to refuse."""
    body = {"name": "bench", "role": "app", "limits": BENCH_LIMITS}
    key: str = _call(base_url, admin_key, "POST", "/api/keys", body)["key"]
    return key


# -- starters --------------------------------------------------------------------------------


def start_floor(running: Children, stub_url: str) -> System:
    port = free_port()
    origin = stub_url.removesuffix("/v1")
    argv = [sys.executable, str(BENCH_DIR / "floor.py"), "--port", str(port)]
    running.start("floor", [*argv, "--upstream", origin])
    wait_until_ready(running, "floor", f"http://127.0.0.1:{port}/healthz")
    return System(
        "floor",
        f"http://127.0.0.1:{port}/v1",
        None,
        running.pid("floor"),
        "aiohttp reverse proxy, bench/floor.py: no parsing, no auth",
    )


def guard_available() -> bool:
    """Whether this checkout reads KEEL_GUARD_POLICY (unknown KEEL_* variables are ignored)."""
    from keel.settings import Settings

    return "guard_policy" in Settings.model_fields


def start_keel(
    running: Children,
    tmp: Path,
    stub_url: str,
    name: str,
    *,
    tracing: bool,
    limits: bool,
    env_extra: dict[str, str] | None = None,
    database_url: str | None = None,
) -> System:
    """`keel serve` behind the route of `configure_route`; key: app key with limits, or admin."""
    data_dir = tmp / name
    data_dir.mkdir()
    config = data_dir / "keel.yaml"
    lines = [f"tracing: {'true' if tracing else 'false'}\n"]
    if database_url:
        lines.append(f"database_url: {database_url}\n")
    config.write_text("".join(lines))
    port = free_port()
    argv = [
        str(_keel_executable()),
        "serve",
        "--no-local-model",
        "--no-embeddings",
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        "--config",
        str(config),
        "--log-level",
        "warning",
    ]
    # Only keel.yaml, the flags and env_extra configure this Keel, not the caller's KEEL_*.
    env = {key: value for key, value in os.environ.items() if not key.startswith("KEEL_")}
    running.start(name, argv, env | (env_extra or {}))
    key_file = data_dir / "admin.key"
    wait_until_ready(running, name, f"http://127.0.0.1:{port}/healthz", also=key_file)
    base_url = f"http://127.0.0.1:{port}/v1"
    admin = key_file.read_text().strip()
    configure_route(base_url, admin, stub_url)
    key = limited_app_key(base_url, admin) if limits else admin
    parts = [
        "auth (app key, in-process limits + budget)" if limits else "auth (admin key)",
        "route over 2 targets",
        "tracing to " + ("the store" if tracing else "nothing"),
    ]
    if env_extra:
        parts.append(" ".join(f"{k}={v}" for k, v in env_extra.items()))
    return System(name, base_url, key, running.pid(name), ", ".join(parts))


def ensure_litellm(venv: Path = LITELLM_VENV, spec: str = LITELLM_SPEC) -> Path:
    """LiteLLM's proxy in a virtual environment of its own; installed on first use."""
    stamp = venv / ".keel-bench-spec"
    executable = venv / "bin" / "litellm"
    if executable.exists() and stamp.exists() and stamp.read_text().strip() == spec:
        return executable
    print(f"installing {spec} into {venv} (once) ...", file=sys.stderr, flush=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    steps = [
        [sys.executable, "-m", "venv", str(venv)],
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", spec],
    ]
    for argv in steps:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise BenchError(f"{' '.join(argv)} failed:\n{done.stderr[-2000:]}")
    stamp.write_text(spec + "\n")
    return executable


def litellm_config(stub_url: str) -> str:
    """Two deployments of one model name on the stub, as Keel's route has two targets.

    Production settings from LiteLLM's "Best Practices for Production" page: a master key,
    no debug logging, JSON logs, a request timeout; no database (so no spend or error logs).
    """
    deployment = (
        "  - model_name: stub\n"
        "    litellm_params:\n"
        "      model: openai/stub\n"
        f"      api_base: {stub_url}\n"
        "      api_key: bench\n"
    )
    return (
        "model_list:\n" + deployment * 2 + "general_settings:\n"
        f"  master_key: {LITELLM_MASTER_KEY}\n"
        "litellm_settings:\n"
        "  request_timeout: 600\n"
        "  set_verbose: false\n"
        "  json_logs: true\n"
    )


def start_litellm(running: Children, tmp: Path, stub_url: str, workers: int = 1) -> System:
    executable = ensure_litellm()
    config = tmp / "litellm.yaml"
    config.write_text(litellm_config(stub_url))
    port = free_port()
    argv = [
        str(executable),
        "--config",
        str(config),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        str(workers),
    ]
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("LITELLM_", "DATABASE_URL"))
    }
    env |= {
        "LITELLM_LOG": "ERROR",  # no INFO lines per request
        "LITELLM_MODE": "PRODUCTION",  # no load_dotenv()
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no fetch from GitHub at start
    }
    running.start("litellm", argv, env)
    wait_until_ready(running, "litellm", f"http://127.0.0.1:{port}/health/liveliness")
    version = spec_version(LITELLM_SPEC)
    return System(
        "litellm",
        f"http://127.0.0.1:{port}/v1",
        LITELLM_MASTER_KEY,
        running.pid("litellm"),
        f"LiteLLM proxy {version}, {workers} worker, no database, 2 deployments",
    )


def spec_version(spec: str) -> str:
    return spec.split("==", 1)[1] if "==" in spec else spec
