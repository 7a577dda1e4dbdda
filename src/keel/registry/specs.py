"""What a provider, model version, route and deployment look like, as written by people.

The same schemas validate API bodies and the sections of keel.yaml that `keel apply`
reads, so a file and an API call are checked by one set of rules.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from keel.providers.plugins import KIND, LOCAL_KIND, ProviderPlugins, UnknownProviderKind

NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$")
VERSION_REF = re.compile(r"^([a-z0-9][a-z0-9._-]{0,99})@([0-9]{1,9})$")


def _check_name(value: str) -> str:
    if not NAME.match(value):
        raise ValueError(
            f"{value!r} is not a valid name: use lowercase letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return value


def parse_version_ref(ref: str) -> tuple[str, int]:
    """'smollm2@2' → ('smollm2', 2); ValueError naming the expected form otherwise."""
    match = VERSION_REF.match(ref)
    if not match:
        raise ValueError(f"{ref!r} is not a model version; write it as name@number, e.g. smollm2@1")
    return match.group(1), int(match.group(2))


MAX_WEIGHT = 1_000_000
WEIGHT_RULE = (
    "weights are relative: each target gets weight / (sum of the weights) of the traffic, "
    f"so each must be a whole number from 0 to {MAX_WEIGHT} and at least one above 0"
)


def check_weights(targets: dict[str, int]) -> dict[str, int]:
    """Refs and weights of a split; ValueError naming the rule that a weight breaks."""
    for ref, weight in targets.items():
        parse_version_ref(ref)
        if weight < 0:
            raise ValueError(f"weight of {ref} is {weight}, below 0; {WEIGHT_RULE}")
        if weight > MAX_WEIGHT:
            raise ValueError(f"weight of {ref} is {weight}, above {MAX_WEIGHT}; {WEIGHT_RULE}")
    if targets and sum(targets.values()) <= 0:
        raise ValueError(f"every weight is 0, so no target would get traffic; {WEIGHT_RULE}")
    return targets


def shares(targets: dict[str, int]) -> dict[str, float]:
    """Each target's share of the traffic in percent (weights are relative)."""
    total = sum(targets.values())
    return {ref: (100.0 * w / total if total else 0.0) for ref, w in targets.items()}


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProviderBody(_Spec):
    """A provider without its name (the API takes the name from the path)."""

    kind: str = Field(
        description="openai_compat, anthropic, local, or a kind an installed plugin adds.",
    )
    base_url: str | None = Field(
        None,
        description="API base URL (openai_compat: …/v1; anthropic: https://api.anthropic.com).",
    )
    api_key: str | None = Field(
        None, description="Upstream key; stored encrypted, never returned.", repr=False
    )
    api_key_env: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,199}$",
        description="Environment variable that holds the upstream key, read by the Keel "
        "server itself (each replica from its own environment); keel.yaml's "
        "`api_key: {$env: NAME}`. Not with api_key.",
    )
    config: dict[str, Any] = Field(
        default_factory=dict,
        description="Kind-specific settings; local: {model_path: <gguf path> | 'bundled:smollm2'}.",
    )

    @field_validator("kind")
    @classmethod
    def _kind(cls, value: str) -> str:
        if not KIND.match(value):
            raise ValueError(
                f"{value!r} is not a provider kind: use 1 to 32 lowercase letters, digits, "
                "'.', '_' or '-' (e.g. openai_compat)"
            )
        return value

    @model_validator(mode="after")
    def _local_needs(self) -> ProviderBody:
        if self.kind == LOCAL_KIND and "model_path" not in self.config:
            raise ValueError("a local provider needs config.model_path (a .gguf file)")
        if self.api_key is not None and self.api_key_env is not None:
            raise ValueError("give api_key or api_key_env, not both")
        return self


def check_provider_kind(body: ProviderBody, installed: ProviderPlugins) -> tuple[str, str] | None:
    """(field, why) when no installed plugin can serve `body`; None when one can.

    Not a schema rule: plugins add kinds, and only the process holding them knows which.
    """
    if body.kind == LOCAL_KIND:
        return None
    try:
        plugin = installed.get(body.kind)
    except UnknownProviderKind as exc:
        return "kind", str(exc)
    url = body.base_url
    if plugin.needs_base_url and not (url and url.startswith(("http://", "https://"))):
        return "base_url", f"a {body.kind} provider needs base_url (http:// or https://)"
    return None


class ProviderSpec(ProviderBody):
    name: str = Field(description="Unique name within the project.")

    _name = field_validator("name")(_check_name)


class ModelVersionSpec(_Spec):
    name: str = Field(description="Model name; versions are numbered per name.")
    provider: str = Field(description="Provider that serves it.")
    upstream_model: str = Field(min_length=1, description="Model id the provider knows it by.")
    params: dict[str, Any] = Field(
        default_factory=dict, description="Default request params (temperature, max_tokens, …)."
    )
    context_window: int | None = Field(None, ge=1, le=10_000_000)
    input_price_per_m: float = Field(0.0, ge=0, description="Price per 1M input tokens.")
    output_price_per_m: float = Field(0.0, ge=0, description="Price per 1M output tokens.")
    tags: list[str] = Field(default_factory=list)

    _name = field_validator("name")(_check_name)


class RouteBody(_Spec):
    """A route without its name (the API takes the name from the path)."""

    targets: dict[str, int] = Field(
        min_length=1,
        description="Model version → relative weight: each target gets weight / sum of "
        "weights of the traffic ({a@1: 90, a@2: 10} and {a@1: 9, a@2: 1} are the same split).",
    )
    sticky: Literal["key", "user"] | None = Field(
        None, description="Keep each API key, or each `user`, on one target."
    )
    fallbacks: list[str] = Field(
        default_factory=list, description="Model versions tried, in order, when targets fail."
    )
    timeout: float | None = Field(None, gt=0, le=3600, description="Seconds per attempt.")
    retries: int = Field(2, ge=0, le=10, description="Extra attempts after the first.")
    breaker_failures: int | None = Field(
        None,
        ge=1,
        le=1000,
        description="Consecutive failures that open this route's breaker of a target "
        "(default: the breaker_failures setting).",
    )
    breaker_cooldown: float | None = Field(
        None,
        gt=0,
        le=3600,
        description="Seconds this route's open breaker waits before a probe "
        "(default: the breaker_cooldown setting).",
    )

    @field_validator("targets")
    @classmethod
    def _weights(cls, value: dict[str, int]) -> dict[str, int]:
        return check_weights(value)

    @field_validator("fallbacks")
    @classmethod
    def _refs(cls, value: list[str]) -> list[str]:
        for ref in value:
            parse_version_ref(ref)
        return value

    def refs(self) -> list[str]:
        return [*self.targets, *(f for f in self.fallbacks if f not in self.targets)]


class RouteSpec(RouteBody):
    name: str = Field(description="What clients send as `model`.")

    _name = field_validator("name")(_check_name)


class DeploymentSpec(_Spec):
    model: str = Field(description="Model version to serve locally, e.g. smollm2@1.")
    replicas: int = Field(1, ge=1, le=16, description="llama.cpp server processes.")
    on: Literal["local", "ray"] = Field(
        "local",
        description="Where the replicas run: local (child processes of the gateway) or ray "
        "(actors on the Ray cluster at KEEL_RAY_ADDRESS, restarted by Ray when they die).",
    )

    @field_validator("model")
    @classmethod
    def _ref(cls, value: str) -> str:
        parse_version_ref(value)
        return value
