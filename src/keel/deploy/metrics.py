"""Prometheus metrics of the model servers this process supervises, read at scrape time."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from keel.deploy.manager import DeploymentManager

# Numbers so that alerts can compare (`== 4`), as keel_circuit_breaker_state does.
STATE_CODES = {"stopped": 0, "starting": 1, "ready": 2, "restarting": 3, "crashlooping": 4}


class DeploymentMetrics(Collector):
    def __init__(self, deployments: DeploymentManager):
        self._deployments = deployments

    def collect(self) -> Iterable[Metric]:
        crashes = CounterMetricFamily(
            "keel_model_server_crashes",
            "Supervised model server processes that died or failed their start-up self-test.",
            labels=["project", "deployment"],
        )
        for (project, ref), total in sorted(self._deployments.crash_totals().items()):
            crashes.add_metric([project, ref], total)
        yield crashes
        state = GaugeMetricFamily(
            "keel_model_server_state",
            "State of each replica: 0 stopped, 1 starting, 2 ready, 3 restarting, 4 crashlooping.",
            labels=["project", "deployment", "replica"],
        )
        for project, ref, index, name in self._deployments.replica_states():
            state.add_metric([project, ref, str(index)], STATE_CODES[name])
        yield state
