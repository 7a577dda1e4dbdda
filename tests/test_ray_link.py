"""The readiness check of the Ray cluster Keel joined: a TCP probe of its GCS port.

The real cluster's reachable and lost states are checked in tests/jobs/test_ray_outage.py;
here a stand-in for the `ray` module says which address was joined."""

from __future__ import annotations

import asyncio
import sys
from types import SimpleNamespace

import pytest

from keel.ray_link import cluster_check


def joined(address: str | None) -> SimpleNamespace:
    context = SimpleNamespace(gcs_address=address)
    return SimpleNamespace(
        is_initialized=lambda: address is not None, get_runtime_context=lambda: context
    )


async def test_a_cluster_port_that_answers_is_reachable_and_a_closed_one_is_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = await asyncio.start_server(lambda _r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    monkeypatch.setitem(sys.modules, "ray", joined(f"127.0.0.1:{port}"))
    assert await cluster_check() == {
        "ready": True, "state": "reachable", "address": f"127.0.0.1:{port}"}  # fmt: skip
    server.close()
    await server.wait_closed()
    lost = await cluster_check()
    assert lost is not None
    assert lost["state"] == "unreachable"
    assert lost["ready"] is True  # the gateway still serves without its cluster


async def test_no_check_where_no_cluster_was_joined(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", joined(None))
    assert await cluster_check() is None
    monkeypatch.delitem(sys.modules, "ray")
    assert await cluster_check() is None
