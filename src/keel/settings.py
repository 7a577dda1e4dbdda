"""Keel's one settings table and the loader that layers its sources.

Precedence, lowest to highest: defaults < keel.yaml < KEEL_* environment < CLI flags.
Every setting has a type, a default and a one-line help; `keel config show` prints them.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from keel.cache.config import DEFAULT_THRESHOLD

ENV_PREFIX = "KEEL_"
# Top-level keys of keel.yaml that declare registry state (applied by `keel apply` and at
# `keel serve` start) rather than set a setting; kept equal to keel.gitops.apply.SECTIONS.
DECLARATION_SECTIONS = (
    "providers", "models", "routes", "deployments", "prompts", "workflows", "agents",
)  # fmt: skip
SourceName = Literal["default", "file", "env", "cli"]


class SettingsError(ValueError):
    """A setting could not be read; the message names the setting and its source."""


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "keel"


class UpstreamSettings(BaseModel):
    """An OpenAI-compatible server whose models Keel serves under their own names."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Provider name, shown in /v1/models as owned_by.")
    base_url: str = Field(description="Base URL including /v1, e.g. http://127.0.0.1:8080/v1.")
    api_key: str | None = Field(
        default=None, description="Bearer key for the upstream; write {$env: NAME} to read it."
    )
    models: list[str] = Field(min_length=1, description="Model ids this upstream serves.")

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https:// (got {value!r})")
        return value.rstrip("/")


class Settings(BaseModel):
    """The effective configuration of one Keel process."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field("127.0.0.1", description="Interface the gateway listens on.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port the gateway listens on.")
    data_dir: Path = Field(
        default_factory=_default_data_dir,
        description="Where Keel keeps its database, admin key and logs.",
    )
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL; default is SQLite (WAL) at <data_dir>/keel.db.",
        json_schema_extra={"secret": True},
    )
    secret_key: str | None = Field(
        None,
        description="Key that encrypts provider secrets at rest; default a generated "
        "<data_dir>/secret.key.",
        json_schema_extra={"secret": True},
    )
    max_body_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, description="Largest request body accepted (413 above)."
    )
    request_body_timeout: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="Seconds a client has to send a request's whole body after its headers "
        "(408 and the connection closed after).",
    )
    request_header_timeout: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="Seconds a client has to send a request's headers, from connecting or "
        "from its previous answer (the connection is closed after).",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Log level of the gateway process."
    )
    local_model: bool = Field(
        True, description="Serve the bundled SmolLM2 GGUF with a supervised llama.cpp server."
    )
    local_model_name: str = Field("smollm2", description="Model id of the bundled chat model.")
    local_model_path: Path | None = Field(
        None, description="GGUF file to serve instead of the bundled one."
    )
    local_model_ctx: int = Field(2048, ge=256, description="Context window of the local model.")
    local_model_threads: int = Field(
        0, ge=0, description="CPU threads for llama.cpp; 0 means one per core."
    )
    local_model_ready_timeout: float = Field(
        120.0, gt=0, description="Seconds to wait for the llama.cpp server to become ready."
    )
    local_model_restart_backoff: float = Field(
        0.5, gt=0, le=3600, description="Seconds before restarting a crashed llama.cpp server; "
        "doubles with each recent crash.",
    )  # fmt: skip
    local_model_restart_backoff_max: float = Field(
        10.0, gt=0, le=3600, description="Longest wait between restarts of a llama.cpp server "
        "(the pace of retries while it is crashlooping).",
    )  # fmt: skip
    local_model_crashloop_crashes: int = Field(
        5, ge=1, le=1000, description="Crashes within local_model_crashloop_window that mark a "
        "llama.cpp server crashlooping.",
    )  # fmt: skip
    local_model_crashloop_window: float = Field(
        60.0, gt=0, le=86400, description="Seconds over which llama.cpp server crashes are "
        "counted for local_model_crashloop_crashes.",
    )  # fmt: skip
    local_model_logs_kept: int = Field(
        5, ge=1, le=100, description="Earlier logs kept per llama.cpp server process "
        "(<log>.1 is the newest).",
    )  # fmt: skip
    embeddings: bool = Field(
        True, description="Serve the bundled all-MiniLM-L6-v2 model on /v1/embeddings."
    )
    embedding_model_name: str = Field(
        "all-minilm-l6-v2", description="Model id of the bundled embedding model."
    )
    embedding_max_inputs: int = Field(
        2048, ge=1, description="Most inputs accepted in one /v1/embeddings request."
    )
    embedding_threads: int = Field(
        1,
        ge=0,
        description="Threads of the bundled embedding model, on ONNX Runtime or torch (0: one "
        "per core); one leaves the other cores to the gateway and is faster on a busy CPU "
        "(docs/insights.md).",
    )
    jobs_concurrency: int = Field(
        32, ge=1, le=1024, description="Batch lines (job items) in flight at once per process."
    )
    run_jobs: bool = Field(
        True,
        description="Run jobs (batches) in this keel serve process; false leaves them to "
        "keel worker processes on the same database.",
    )
    ray_address: str | None = Field(
        None,
        description="Ray cluster that runs batch lines, experiment items and fine-tuning "
        "(auto, host:port or ray://host:10001); default none: they run in this process.",
    )
    ray_callback_url: str | None = Field(
        None,
        description="URL the Ray actors use to reach this Keel's API (a load balancer in front "
        "of the replicas); default http://127.0.0.1:<port>.",
    )
    ray_actors: int = Field(
        2, ge=1, le=1024, description="Ray actors that run batch lines, jobs_concurrency split "
        "between them.",
    )  # fmt: skip
    upstreams: list[UpstreamSettings] = Field(
        default_factory=list, description="Extra OpenAI-compatible servers and their model ids."
    )
    upstream_connect_timeout: float = Field(
        5.0, gt=0, description="Seconds to open a connection to an upstream."
    )
    upstream_timeout: float = Field(
        600.0,
        gt=0,
        description="Seconds an upstream may stay silent (before or between chunks).",
    )

    breaker_failures: int = Field(
        5, ge=1, le=1000, description="Consecutive failures that open a target's circuit breaker."
    )
    breaker_cooldown: float = Field(
        10.0, gt=0, le=3600, description="Seconds an open breaker waits before a probe request."
    )

    # Guardrails (docs/guardrails.md)
    guard_policy: str = Field(
        "",
        max_length=100,
        description="Guard policy for requests no project, route or key attachment covers: "
        "default, strict, a name from guard_policies, or empty for none.",
    )
    guard_policies: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Guard policies every project may use, by name (the policy spec of "
        "docs/guardrails.md).",
    )

    # Shared state across replicas (docs/security.md)
    redis_url: str | None = Field(
        None,
        description="Redis for limits, budgets and change events shared by every replica; "
        "default in-process.",
        json_schema_extra={"secret": True},
    )
    redis_prefix: str = Field(
        "keel",
        min_length=1,
        max_length=100,
        description="Prefix of every Redis key and channel Keel uses (one per deployment).",
    )

    # Response cache (docs/cache.md)
    cache: bool = Field(
        True, description="Reuse answers of deterministic requests (temperature 0 or a seed)."
    )
    cache_backend: Literal["memory", "redis"] = Field(
        "memory", description="Where cached answers live: in-process, or redis_url (shared)."
    )
    cache_mode: Literal["exact", "semantic", "both"] = Field(
        "exact", description="Cache lookups of routes that set none: exact, semantic or both."
    )
    cache_ttl: float = Field(
        3600.0, gt=0, le=366 * 86400, description="Seconds a cached answer is served."
    )
    cache_max_entries: int = Field(
        100_000, ge=0, description="Most answers cached; least recently used go first."
    )
    cache_max_bytes: int = Field(
        512 * 1024**2, ge=0, description="Most bytes of cached answers and vectors (LRU)."
    )
    cache_semantic_threshold: float = Field(
        DEFAULT_THRESHOLD, ge=0, le=1, description="Least cosine similarity of a semantic hit."
    )
    cache_verify: bool = Field(
        True, description="Semantic hits must also match numbers, names and negations."
    )
    cache_routes: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Per-route cache policy over the defaults above, by route name: enabled, "
        "mode, ttl_s, threshold, verify, cacheable (deterministic|always|never).",
    )

    # Observability (docs/observability.md)
    tracing: bool = Field(
        True, description="Record a trace, spans and request metrics for every gateway request."
    )
    trace_content: bool = Field(
        True, description="Store request and response content in traces; off keeps sizes + SHA-256."
    )
    trace_queue_size: int = Field(
        20_000, ge=100, le=10_000_000, description="Trace records held in memory before spilling."
    )
    trace_batch_size: int = Field(
        500, ge=1, le=10_000, description="Trace records written to the store in one batch."
    )
    trace_flush_interval: float = Field(
        0.2, gt=0, le=60, description="Seconds a trace record waits at most before a batch write."
    )
    insights_sample_rate: float = Field(
        1.0, ge=0, le=1, description="Share of traced requests embedded for insights (0: none)."
    )
    insights_queue_size: int = Field(
        10_000, ge=10, le=1_000_000, description="Requests waiting to be embedded, at most."
    )
    insights_priority: Literal["low", "idle", "normal"] = Field(
        "low",
        description="CPU priority of the thread embedding traffic: low (nice 19), idle "
        "(SCHED_IDLE) or normal; requests' own embeddings keep normal (docs/insights.md).",
    )
    insights_process: bool = Field(
        False,
        description="Embed traffic in a child process (about 190 MB: the model's ONNX graph "
        "and tokenizer, no PyTorch, where the gateway embeds on ONNX Runtime; else a copy of "
        "the whole model, about 700 MB), so its work never holds the gateway process's GIL; false: "
        "on a thread of the gateway process (docs/insights.md).",
    )
    insights_threads: int = Field(
        1,
        ge=0,
        le=256,
        description="Threads of the child process that embeds traffic (insights_process; 0: "
        "one per core), each at insights_priority (docs/insights.md).",
    )
    trace_spill_max_bytes: int = Field(
        1024**3, ge=0, description="Size cap of <data_dir>/spill; records past it are dropped."
    )
    trace_retention_days: float = Field(
        30.0,
        ge=0,
        le=36_500,
        description="Days traces, spill and quarantine files are kept; 0 keeps them forever.",
    )
    trace_retention_max_rows: int = Field(
        0, ge=0, description="Most traces kept (the oldest beyond it are deleted); 0: no cap."
    )
    trace_retention_interval: float = Field(
        600.0, ge=1, le=86_400, description="Seconds between two background retention sweeps."
    )
    workflow_retention_days: float = Field(
        30.0, ge=0, le=36_500, description="Days finished workflow runs are kept; 0: forever."
    )
    workflow_retention_max_runs: int = Field(
        0, ge=0, description="Most finished workflow runs kept (oldest go first); 0: no cap."
    )
    otlp_endpoint: str | None = Field(
        None, description="OTLP/HTTP endpoint to export spans to, e.g. http://127.0.0.1:4318."
    )

    @field_validator("cache_routes")
    @classmethod
    def _known_cache_fields(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        known = {"enabled", "mode", "ttl_s", "threshold", "verify", "cacheable"}
        for route, fields in value.items():
            unknown = sorted(set(fields) - known)
            if unknown:
                raise ValueError(
                    f"route {route!r}: unknown cache fields {unknown}; known: {sorted(known)}"
                )
        return value

    @field_validator("cache_backend")
    @classmethod
    def _redis_for_shared_cache(cls, value: str, info: ValidationInfo) -> str:
        if value == "redis" and not info.data.get("redis_url"):
            raise ValueError(
                "the redis cache backend needs redis_url, e.g. redis://127.0.0.1:6379/0"
            )
        return value

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'keel.db'}"


@dataclass(frozen=True)
class LoadedSettings:
    settings: Settings
    sources: dict[str, SourceName]
    config_file: Path | None
    # Declaration sections the config file holds (providers:, routes:, …), in file order.
    declarations: tuple[str, ...] = ()


def _resolve_env_refs(value: Any, env: Mapping[str, str], where: str) -> Any:
    """Replace {"$env": "NAME"} with the variable's value, so secrets stay out of files."""
    if isinstance(value, dict):
        if set(value) == {"$env"}:
            name = value["$env"]
            if name not in env:
                raise SettingsError(f"{where}: environment variable {name!r} is not set")
            return env[name]
        return {k: _resolve_env_refs(v, env, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_env_refs(v, env, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def _read_file(path: Path, env: Mapping[str, str]) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The file's settings (env references resolved) and the declaration sections it holds.

    Declarations are left to `keel apply`: their `{$env: X}` references are resolved by
    the server that applies them, not here.
    """
    try:
        text = path.read_text()
        raw = yaml.safe_load(text) or {}
    except OSError as exc:
        raise SettingsError(f"cannot read config file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise SettingsError(f"config file {path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise SettingsError(
            f"config file {path} must hold a mapping of settings (port: 8000) and "
            f"declaration sections ({', '.join(DECLARATION_SECTIONS)})"
        )
    declared = tuple(str(k) for k in raw if k in DECLARATION_SECTIONS)
    values = {str(k): v for k, v in raw.items() if k not in DECLARATION_SECTIONS}
    unknown = [k for k in values if k not in Settings.model_fields]
    if unknown:
        raise SettingsError(_unknown_keys_message(path, text, unknown))
    resolved: dict[str, Any] = _resolve_env_refs(values, env, str(path))
    return resolved, declared


def _key_lines(text: str) -> dict[str, int]:
    """Line of each top-level key of a YAML mapping document (1-based)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return {}
    if not isinstance(root, yaml.MappingNode):
        return {}
    return {str(k.value): k.start_mark.line + 1 for k, _ in root.value}


def _unknown_keys_message(path: Path, text: str, unknown: list[str]) -> str:
    lines = _key_lines(text)
    known = [*Settings.model_fields, *DECLARATION_SECTIONS]
    problems = []
    for key in unknown:
        close = difflib.get_close_matches(key, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        problems.append(f"{path}:{lines.get(key, 0)}: unknown key {key!r}{hint}")
    return (
        "\n".join(problems) + "\nfix: rename or remove it. keel.yaml holds settings (listed by "
        "'keel config show', see docs/configuration.md) and the declaration sections "
        f"{', '.join(DECLARATION_SECTIONS)} (docs/deployments.md)"
    )


def _read_env(env: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, field in Settings.model_fields.items():
        raw = env.get(ENV_PREFIX + name.upper())
        if raw is None:
            continue
        if field.annotation is not None and "list" in str(field.annotation):
            try:
                values[name] = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise SettingsError(f"{ENV_PREFIX}{name.upper()} must be JSON: {exc}") from exc
        else:
            values[name] = raw
    return values


def find_config_file(explicit: Path | None, env: Mapping[str, str]) -> Path | None:
    if explicit is not None:
        return explicit
    if env.get("KEEL_CONFIG"):
        return Path(env["KEEL_CONFIG"])
    local = Path("keel.yaml")
    return local if local.is_file() else None


def load_settings(
    config_file: Path | None = None,
    cli: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> LoadedSettings:
    """Layer defaults < file < env < CLI and validate once, remembering each value's source."""
    env = os.environ if env is None else env
    path = find_config_file(config_file, env)
    file_values, declared = _read_file(path, env) if path else ({}, ())
    layers: list[tuple[SourceName, dict[str, Any]]] = [
        ("file", file_values),
        ("env", _read_env(env)),
        ("cli", {k: v for k, v in (cli or {}).items() if v is not None}),
    ]
    merged: dict[str, Any] = {}
    sources: dict[str, SourceName] = dict.fromkeys(Settings.model_fields, "default")
    for source, values in layers:
        unknown = set(values) - set(Settings.model_fields)
        if unknown:
            known = ", ".join(sorted(Settings.model_fields))
            raise SettingsError(
                f"unknown setting(s) {', '.join(sorted(unknown))} in {source}; known: {known}"
            )
        for key, value in values.items():
            merged[key] = value
            sources[key] = source
    try:
        settings = Settings.model_validate(merged)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])} ({sources.get(str(err['loc'][0]), '?')}): "
            f"{err['msg']}"
            for err in exc.errors()
        )
        raise SettingsError(f"invalid settings: {problems}") from exc
    return LoadedSettings(
        settings=settings, sources=sources, config_file=path, declarations=declared
    )


def mask_secret(value: str) -> str:
    """Hide the password of a URL; hide any other secret whole."""
    if "://" in value:
        parts = urlsplit(value)
        if parts.password:
            netloc = f"{parts.username}:****@{parts.hostname}" + (
                f":{parts.port}" if parts.port else ""
            )
            return urlunsplit(parts._replace(netloc=netloc))
        return value
    return "****"


def describe(loaded: LoadedSettings) -> list[tuple[str, str, str, str]]:
    """Rows of (name, effective value, source, help) with secrets masked."""
    rows: list[tuple[str, str, str, str]] = []
    settings = loaded.settings
    for name, field in Settings.model_fields.items():
        value = getattr(settings, name)
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        if name == "upstreams":
            shown = json.dumps(
                [
                    {**u.model_dump(mode="json"), "api_key": "****" if u.api_key else None}
                    for u in settings.upstreams
                ]
            )
        elif value is None:
            shown = "-"
        elif extra.get("secret"):
            shown = mask_secret(str(value))
        else:
            shown = str(value)
        if name == "database_url" and value is None:
            shown = f"- ({settings.effective_database_url})"
        rows.append((name, shown, loaded.sources[name], field.description or ""))
    return rows
