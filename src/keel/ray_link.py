"""Joining a Ray cluster from Keel's own process, which Ray calls the driver.

Ray ends a driver whose cluster (its GCS) has not answered for 60 seconds, its default
`gcs_rpc_server_reconnect_timeout_s`. For a gateway that is the wrong trade: a Ray head that
restarts or is lost should cost the jobs, trainings and replicas placed on it (each of
which has its own timeouts and reports its failure), never the process that serves every
other request. Keel raises that limit to a day unless the environment already sets it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from types import ModuleType

RECONNECT_ENV = "RAY_gcs_rpc_server_reconnect_timeout_s"
DRIVER_RECONNECT_S = 86_400
NAMESPACE = "keel"
PROBE_S = 0.5  # a readiness probe's wait for the cluster's GCS port


def join(ray: ModuleType, address: str) -> None:
    """`ray.init` on `address`, in Keel's namespace, with the driver outliving an outage."""
    os.environ.setdefault(RECONNECT_ENV, str(DRIVER_RECONNECT_S))
    ray.init(
        address=address, namespace=NAMESPACE, log_to_driver=False, logging_level=logging.WARNING
    )


async def cluster_check() -> dict[str, object] | None:
    """Whether the Ray cluster this process joined answers on its GCS port: a TCP connect,
    never a Ray call (those wait out the outage). None where no cluster was joined."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return None
    address = str(ray.get_runtime_context().gcs_address)
    host, _, port = address.rpartition(":")
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), PROBE_S)
    except (OSError, TimeoutError, ValueError):
        return {"ready": True, "state": "unreachable", "address": address}
    writer.close()
    return {"ready": True, "state": "reachable", "address": address}
