"""What the registry hands the router: plain frozen values read in one go, never ORM rows.

Rows are tied to a session and mutable; these can cross threads and be kept in tables.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True, slots=True)
class ProviderEntry:
    project_id: str
    name: str
    kind: str
    base_url: str | None
    api_key: str | None = field(repr=False)  # decrypted, for the provider's client only
    config: Mapping[str, Any]
    # Set when the key is read from this server's environment; api_key None: it is unset here.
    api_key_env: str | None = None


@dataclass(frozen=True, slots=True)
class ModelVersionEntry:
    project_id: str
    name: str
    version: int
    provider: str
    upstream_model: str
    params: Mapping[str, Any]
    input_price_per_m: float
    output_price_per_m: float

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


@dataclass(frozen=True, slots=True)
class RouteEntry:
    project_id: str
    name: str
    targets: Mapping[str, int]  # model version → weight
    sticky: Literal["key", "user"] | None
    fallbacks: tuple[str, ...]
    timeout: float | None
    retries: int
    breaker_failures: int | None = None
    breaker_cooldown: float | None = None


@dataclass(frozen=True, slots=True)
class DeploymentEntry:
    project_id: str
    model: str
    replicas: int
    on: str = "local"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything the router needs, read in one go."""

    providers: tuple[ProviderEntry, ...]
    models: tuple[ModelVersionEntry, ...]
    routes: tuple[RouteEntry, ...]
    deployments: tuple[DeploymentEntry, ...]
