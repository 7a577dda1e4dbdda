"""A deployment's replicas behind one Provider: least outstanding requests wins.

Replicas that are starting, restarting or crashlooping get no traffic; a replica that
fails to connect hands the request to the next one, so a crash costs no client request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from keel.deploy.llamacpp import LlamaCppServer
from keel.errors import KeelError, ServiceUnavailable, UpstreamError
from keel.providers.base import Operation, Provider, ProviderResponse, ProviderStream, Usage


@dataclass
class Replica:
    server: LlamaCppServer
    client: Provider
    outstanding: int = 0
    served: int = 0


class _CountedStream:
    """Releases the replica's outstanding slot when the stream is closed."""

    def __init__(self, stream: ProviderStream, replica: Replica):
        self._stream = stream
        self._replica = replica
        self._released = False

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._stream.__aiter__()

    def buffered(self) -> bool:
        return self._stream.buffered()

    async def aclose(self) -> None:
        if not self._released:
            self._released = True
            self._replica.outstanding -= 1
        await self._stream.aclose()


class ReplicaPool:
    def __init__(self, name: str, replicas: list[Replica]):
        self.name = name
        self.replicas = replicas

    def state(self) -> str:
        """One word for the pool: crashlooping if any replica is, else how many are ready."""
        states = {r.server.state for r in self.replicas}
        if not states:
            return "stopped"
        if "crashlooping" in states:
            return "crashlooping"
        if states == {"ready"}:
            return "ready"
        if "ready" in states:
            return "degraded"
        for state in ("restarting", "starting"):
            if state in states:
                return state
        return "stopped"

    def last_crash(self) -> dict[str, Any] | None:
        """The most recent crash of any replica, with the replica's index."""
        crashes = [
            (r.server.crashes.last, index)
            for index, r in enumerate(self.replicas)
            if r.server.crashes.last is not None
        ]
        if not crashes:
            return None
        crash, index = max(crashes, key=lambda pair: pair[0].at)
        return {"replica": index, **crash.as_dict()}

    def _ordered(self) -> list[Replica]:
        ready = [r for r in self.replicas if r.server.ready]
        if not ready:
            states = ", ".join(r.server.state for r in self.replicas) or "no replicas"
            crash = self.last_crash()
            cause = f"; last crash: {crash['cause']}" if crash else ""
            raise ServiceUnavailable(
                f"no ready replica of {self.name} ({states}{cause}); Keel restarts it on its "
                "own, retry shortly (see 'keel deployments list' and /readyz)"
            )
        return sorted(ready, key=lambda r: r.outstanding)

    async def send(self, op: Operation, payload: dict[str, Any]) -> ProviderResponse:
        last: KeelError | None = None
        for replica in self._ordered():
            replica.outstanding += 1
            try:
                result = await replica.client.send(op, payload)
                replica.served += 1
                return result
            except (ServiceUnavailable, UpstreamError) as error:
                last = error  # this replica died under us; the next one takes the request
            finally:
                replica.outstanding -= 1
        assert last is not None
        raise last

    async def open_stream(self, op: Operation, payload: dict[str, Any]) -> ProviderStream:
        last: KeelError | None = None
        for replica in self._ordered():
            replica.outstanding += 1
            try:
                stream = await replica.client.open_stream(op, payload)
            except (ServiceUnavailable, UpstreamError) as error:
                replica.outstanding -= 1
                last = error
                continue
            except BaseException:
                replica.outstanding -= 1
                raise
            replica.served += 1
            return _CountedStream(stream, replica)
        assert last is not None
        raise last

    async def count_usage(self, op: Operation, payload: dict[str, Any], output_text: str) -> Usage:
        return await self.replicas[0].client.count_usage(op, payload, output_text)

    async def close(self) -> None:
        for replica in self.replicas:
            await replica.client.close()

    def status(self) -> list[dict[str, Any]]:
        return [
            {
                "port": r.server.port,
                "pid": r.server.pid,
                "state": r.server.state,
                "ready": r.server.ready,
                "restarts": r.server.restarts,
                "crashes": r.server.crashes.total,
                "next_restart_at": r.server.next_restart_at,
                "last_crash": r.server.crashes.last.as_dict() if r.server.crashes.last else None,
                "log_path": str(r.server.config.log_path),
                "outstanding": r.outstanding,
                "served": r.served,
            }
            for r in self.replicas
        ]
