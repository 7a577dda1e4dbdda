"""Wire access control for one process: keys, identity, limits, budgets and change events.

With `redis_url` set, limits and change events are shared through Redis; otherwise
everything stays in-process.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry

from keel.auth.identity import IdentityService
from keel.auth.keys import KeyService
from keel.events import ChangeBus, LocalChangeBus
from keel.events_redis import RedisChangeBus
from keel.limits.admission import Admission, budget_period
from keel.limits.memory import MemoryBackend
from keel.limits.metrics import AccessMetrics
from keel.limits.recorder import UsageRecorder
from keel.limits.redis import RedisBackend, connect
from keel.limits.resilient import ResilientBackend
from keel.limits.store import SpendStore
from keel.settings import Settings
from keel.store.db import Database


@dataclass
class Access:
    events: ChangeBus
    keys: KeyService
    identity: IdentityService
    admission: Admission
    usage: UsageRecorder
    backend: MemoryBackend | ResilientBackend
    bus: RedisChangeBus | None = None


def build_access(settings: Settings, database: Database) -> Access:
    """Build the pieces (no I/O: Redis connects lazily)."""
    bus = RedisChangeBus(settings.redis_url, settings.redis_prefix) if settings.redis_url else None
    events: ChangeBus = bus or LocalChangeBus()
    keys = KeyService(database, events)
    identity = IdentityService(database, keys, events)
    backend: MemoryBackend | ResilientBackend = MemoryBackend()
    if settings.redis_url:
        shared = RedisBackend(connect(settings.redis_url), settings.redis_prefix)
        backend = ResilientBackend(shared, MemoryBackend())
    usage = UsageRecorder(database, SpendStore(database), keys.record_last_used)
    admission = Admission(backend, identity.project_limits, usage, events)
    return Access(events, keys, identity, admission, usage, backend, bus)


async def start_access(access: Access) -> None:
    """Subscribe to changes, load project limits and this period's spend, start writing."""
    if access.bus is not None:
        await access.bus.start()
    if isinstance(access.backend, ResilientBackend):
        await access.backend.start()  # probes now, then in the background while idle
    access.admission.preload(await asyncio.to_thread(access.identity.all_project_limits))
    now = time.time()
    periods = {kind: budget_period(kind, now) for kind in ("day", "month")}
    by_id = {p.id: p for p in periods.values()}
    totals = await asyncio.to_thread(access.usage.spend_store.totals, list(by_id))
    for subject, period, amount, _tokens in totals:
        await access.backend.seed_spend(f"{subject}:{period}", amount, by_id[period].ttl_s)
    access.usage.start()


async def stop_access(access: Access) -> None:
    await access.usage.close()
    if isinstance(access.backend, ResilientBackend):
        await access.backend.close()
    if access.bus is not None:
        await access.bus.close()


def counters(access: Access) -> dict[str, int]:
    """What AccessMetrics exports (see keel.limits.metrics)."""
    backend = access.backend
    return {
        "redis_failures": backend.redis_failures if isinstance(backend, ResilientBackend) else 0,
        "degraded": int(backend.degraded) if isinstance(backend, ResilientBackend) else 0,
        "releases_expired": (
            backend.releases_expired if isinstance(backend, ResilientBackend) else 0
        ),
        "publish_failures": access.bus.publish_failures if access.bus is not None else 0,
        "settle_failures": access.admission.settle_failures,
        "dropped": access.usage.dropped,
        "flush_failures": access.usage.flush_failures,
    }


def register_metrics(access: Access, registry: CollectorRegistry) -> None:
    registry.register(AccessMetrics(lambda: counters(access)))


def readiness(access: Access) -> dict[str, dict[str, Any]]:
    checks: dict[str, dict[str, Any]] = {}
    if isinstance(access.backend, ResilientBackend):
        checks["limits"] = access.backend.status()
    if access.bus is not None:
        checks["change_events"] = dict(access.bus.status())
    return checks
