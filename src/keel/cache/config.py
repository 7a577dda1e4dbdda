"""What a route asks of the cache (CacheConfig), who is asking (CacheScope), and the
per-request directive read from the client's headers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

Mode = Literal["exact", "semantic", "both"]
Cacheable = Literal["deterministic", "always", "never"]
Directive = Literal["normal", "bypass", "refresh"]

DEFAULT_THRESHOLD = 0.87  # chosen with bench/cache_quality.py; see docs/cache.md


@dataclass(frozen=True, slots=True)
class CacheConfig:
    """A route's cache policy.

    `cacheable`: "deterministic" caches only requests with temperature 0 or a fixed seed
    (a sampled answer is not the answer to reuse), "always" caches every request, "never"
    none. `threshold` is the least cosine similarity a semantic hit needs; `verify` adds
    the stricter check of keel.cache.verify to semantic hits.
    """

    enabled: bool = True
    mode: Mode = "exact"
    ttl_s: float = 3600.0
    threshold: float = DEFAULT_THRESHOLD
    verify: bool = True
    cacheable: Cacheable = "deterministic"

    @property
    def exact(self) -> bool:
        return self.enabled and self.mode in ("exact", "both")

    @property
    def semantic(self) -> bool:
        return self.enabled and self.mode in ("semantic", "both")


@dataclass(frozen=True, slots=True)
class CacheScope:
    """One request as the cache sees it: whose it is and what produced its answer.

    `route_identity` must change whenever the answer could (route name plus the revision
    and model versions of its targets, say); `prompt` is "name@version" when the request
    used a registered prompt, so entries can be purged by prompt version.
    """

    project_id: str
    route: str
    route_identity: str
    config: CacheConfig = field(default_factory=CacheConfig)
    directive: Directive = "normal"
    prompt: str | None = None


def directive_from_headers(headers: Mapping[str, str]) -> Directive:
    """`X-Keel-Cache: bypass|refresh` first, else `Cache-Control: no-store|no-cache`.

    bypass: neither read nor write the cache. refresh: skip the lookup but store the fresh
    answer (HTTP's no-cache: do not serve a stored answer without going to the origin).
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    keel = lowered.get("x-keel-cache", "").strip().lower()
    if keel == "bypass":
        return "bypass"
    if keel == "refresh":
        return "refresh"
    control = lowered.get("cache-control", "").lower()
    directives = {part.strip().split("=", 1)[0] for part in control.split(",")}
    if "no-store" in directives:
        return "bypass"
    if "no-cache" in directives:
        return "refresh"
    return "normal"
