"""The scale-out recipes under deploy/ say what docs/scale-out.md says: the image builds
llama.cpp with ./run's portable flags, and the compose file wires two gateway replicas
behind the balancer to one database, one Redis, one secret and the Ray cluster."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).parents[2]


def test_the_image_builds_llama_cpp_with_the_portable_flags_of_run() -> None:
    run = (ROOT / "run").read_text()
    portable = re.search(r"^LLAMA_PORTABLE_ARGS='([^']+)'", run, re.MULTILINE)
    image = re.search(r'CMAKE_ARGS="([^"]+)"', (ROOT / "deploy" / "Containerfile").read_text())
    assert portable is not None
    assert image is not None
    assert image.group(1) == portable.group(1)
    assert "GGML_NATIVE=OFF" in image.group(1)


def test_compose_runs_two_replicas_behind_the_balancer_on_shared_state_and_ray() -> None:
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    services = compose["services"]
    assert {"postgres", "redis", "ray-head", "ray-worker", "keel-1", "keel-2", "lb"} <= set(
        services
    )
    replicas = [services["keel-1"], services["keel-2"]]
    env = [replica["environment"] for replica in replicas]
    assert env[0] == env[1]  # one database, one Redis, one secret, one Ray cluster
    assert env[0]["KEEL_DATABASE_URL"].startswith("postgresql://")
    assert env[0]["KEEL_REDIS_URL"].startswith("redis://redis:")
    assert env[0]["KEEL_RAY_CALLBACK_URL"] == "http://lb:8000"  # any replica runs a line
    assert "KEEL_SECRET_KEY" in env[0]
    assert "ray-head:6380" in " ".join(services["ray-worker"]["command"])
    balancer = (ROOT / "deploy" / "haproxy.cfg").read_text()
    assert "server keel-1 keel-1:8000" in balancer
    assert "server keel-2 keel-2:8000" in balancer
    assert "httpchk GET /readyz" in balancer
