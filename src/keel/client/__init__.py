"""The typed Python client of a running Keel: datasets, experiments, comparisons and
knowledge bases over the REST API (`from keel import Client`)."""

from keel.client.client import Client, KeelAPIError
from keel.client.types import DatasetInfo, GateReport, Run, VersionInfo

__all__ = ["Client", "DatasetInfo", "GateReport", "KeelAPIError", "Run", "VersionInfo"]
