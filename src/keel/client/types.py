"""What the client returns: small typed records over the API's JSON (`raw` keeps it all)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class VersionInfo:
    version: int
    items: int
    source: str
    note: str = ""

    @classmethod
    def of(cls, data: dict[str, Any]) -> VersionInfo:
        return cls(int(data["version"]), int(data["items"]), str(data["source"]),
                   str(data.get("note", "")))  # fmt: skip


@dataclass(frozen=True)
class DatasetInfo:
    id: str
    name: str
    description: str
    latest_version: int
    versions: list[VersionInfo] = field(default_factory=list)

    @classmethod
    def of(cls, data: dict[str, Any]) -> DatasetInfo:
        return cls(data["id"], data["name"], data.get("description", ""),
                   int(data["latest_version"]),
                   [VersionInfo.of(v) for v in data.get("versions", [])])  # fmt: skip


@dataclass(frozen=True)
class Run:
    """One experiment run (a subject over a dataset version) and, once finished, its summary."""

    id: str
    experiment: str
    title: str
    state: str
    label: str | None
    dataset: str
    dataset_version: int
    progress: dict[str, Any]
    summary: dict[str, Any] | None
    raw: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.state in ("succeeded", "failed", "cancelled")

    def metric(self, name: str) -> float | None:
        """A metric's mean (or `pass_rate`, or NAME.pass_rate) from the summary."""
        summary = self.summary or {}
        if name == "pass_rate":
            return summary.get("pass_rate")
        found = (summary.get("metrics") or {}).get(name.removesuffix(".pass_rate"))
        if found is None:
            return None
        value = found.get("pass_rate" if name.endswith(".pass_rate") else "mean")
        return None if value is None else float(value)

    @classmethod
    def of(cls, data: dict[str, Any]) -> Run:
        return cls(data["id"], str(data.get("experiment") or ""), str(data.get("title") or ""),
                   data["state"], data.get("label"), str(data.get("dataset") or ""),
                   int(data.get("dataset_version") or 0), data.get("progress") or {},
                   data.get("summary"), data)  # fmt: skip


@dataclass(frozen=True)
class GateReport:
    run: str
    passed: bool
    gates: list[dict[str, Any]]
    junit: str

    @classmethod
    def of(cls, data: dict[str, Any]) -> GateReport:
        return cls(data["run"], bool(data["passed"]), list(data["gates"]), str(data["junit"]))
