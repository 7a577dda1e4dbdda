"""`Client`: one object per Keel, with a resource per noun, as MLflow's and Langfuse's
clients read: `client.datasets.from_traces(...)`, `client.experiments.run(...)`,
`client.comparisons.compare(...)`, `client.knowledge_bases.search(...)`."""

from __future__ import annotations

import builtins
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import httpx

from keel.client.types import DatasetInfo, GateReport, Run, VersionInfo

DEFAULT_URL = "http://127.0.0.1:8000"


class KeelAPIError(Exception):
    """The API refused a call: its status, message and the field it names."""

    def __init__(self, status: int, message: str, param: str | None = None,
                 code: str | None = None):  # fmt: skip
        super().__init__(f"{status}: {message}")
        self.status, self.message, self.param, self.code = status, message, param, code


class _Http:
    def __init__(self, base_url: str, api_key: str, timeout: float,
                 transport: httpx.BaseTransport | None):  # fmt: skip
        self.base_url = base_url.rstrip("/")
        self._client = httpx.Client(
            base_url=self.base_url, timeout=timeout, transport=transport,
            headers={"Authorization": f"Bearer {api_key}"},
        )  # fmt: skip

    def call(self, method: str, path: str, *, json: Any = None, params: dict[str, Any] |
             None = None, content: bytes | None = None) -> Any:  # fmt: skip
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = self._client.request(method, path, json=json, params=clean or None,
                                            content=content)  # fmt: skip
        except httpx.HTTPError as error:
            raise KeelAPIError(
                0,
                f"cannot reach Keel at {self.base_url} "
                f"({type(error).__name__}); is 'keel serve' running?",
            ) from error
        if response.status_code >= 400:
            try:
                err = response.json()["error"]
                raise KeelAPIError(response.status_code, err.get("message", ""),
                                   err.get("param"), err.get("code"))  # fmt: skip
            except (ValueError, KeyError, TypeError):
                raise KeelAPIError(response.status_code, response.text[:300]) from None
        return response.json()

    def close(self) -> None:
        self._client.close()


class Datasets:
    def __init__(self, http: _Http):
        self._http = http

    def list(self) -> builtins.list[DatasetInfo]:
        return [DatasetInfo.of(d) for d in self._http.call("GET", "/api/datasets")["data"]]

    def get(self, name: str) -> DatasetInfo:
        return DatasetInfo.of(self._http.call("GET", f"/api/datasets/{name}"))

    def create(self, name: str, items: Iterable[dict[str, Any]] = (),
               description: str = "") -> DatasetInfo:  # fmt: skip
        body = {"name": name, "description": description, "items": list(items)}
        return DatasetInfo.of(self._http.call("POST", "/api/datasets", json=body))

    def add_items(self, name: str, items: Iterable[dict[str, Any]] = (),
                  remove: Sequence[int] = (), note: str = "") -> VersionInfo:  # fmt: skip
        body = {"items": list(items), "remove": list(remove), "note": note}
        return VersionInfo.of(self._http.call("POST", f"/api/datasets/{name}/items", json=body))

    def upload(self, name: str, path: str | Path) -> VersionInfo:
        """A JSONL or CSV file as the next version (the dataset is created when new)."""
        path = Path(path)
        return VersionInfo.of(self._http.call(
            "POST", f"/api/datasets/{name}/upload", params={"filename": path.name},
            content=path.read_bytes()))  # fmt: skip

    def from_traces(self, name: str, **filters: Any) -> VersionInfo:
        """Traces matching `filters` (since, until, route, prompt, status, cache, user,
        metadata, q, score_name, min_score, max_score, limit, expected) as the next version."""
        return VersionInfo.of(
            self._http.call("POST", f"/api/datasets/{name}/from-traces", json=filters)
        )

    def items(self, name: str, version: int | None = None) -> builtins.list[dict[str, Any]]:
        """Every item of a version (latest by default), paging through the API."""
        found: builtins.list[dict[str, Any]] = []
        after = 0
        while True:
            page = self._http.call(
                "GET",
                f"/api/datasets/{name}/items",
                params={"version": version, "after": after, "limit": 1000},
            )
            found.extend(page["data"])
            if not page["has_more"]:
                return found
            after = page["data"][-1]["id"]

    def delete(self, name: str) -> None:
        self._http.call("DELETE", f"/api/datasets/{name}")


class Experiments:
    def __init__(self, http: _Http):
        self._http = http

    def start(self, spec: dict[str, Any]) -> builtins.list[Run]:
        """One run per subject, queued; see `wait`."""
        return [Run.of(r) for r in self._http.call("POST", "/api/experiments", json=spec)["data"]]

    def get(self, run_id: str) -> Run:
        return Run.of(self._http.call("GET", f"/api/experiments/{run_id}"))

    def list(self, limit: int = 50) -> builtins.list[Run]:
        page = self._http.call("GET", "/api/experiments", params={"limit": limit})
        return [Run.of(r) for r in page["data"]]

    def items(self, run_id: str) -> builtins.list[dict[str, Any]]:
        return list(self._http.call("GET", f"/api/experiments/{run_id}/items")["data"])

    def wait(self, runs: Sequence[Run], *, poll: float = 0.5, timeout: float | None = None,
             on_progress: Any = None) -> builtins.list[Run]:  # fmt: skip
        """Poll until every run has finished; `on_progress(runs)` after each look."""
        deadline = None if timeout is None else time.monotonic() + timeout
        current = list(runs)
        while True:
            current = [r if r.finished else self.get(r.id) for r in current]
            if on_progress is not None:
                on_progress(current)
            if all(r.finished for r in current):
                return current
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"runs not finished after {timeout} s")
            time.sleep(poll)

    def run(self, spec: dict[str, Any], *, timeout: float | None = None) -> builtins.list[Run]:
        """Start and wait."""
        return self.wait(self.start(spec), timeout=timeout)

    def gates(self, run_id: str, gates: Sequence[str], baseline: str | None = None,
              confidence: float = 0.95) -> GateReport:  # fmt: skip
        body = {"gates": list(gates), "baseline": baseline, "confidence": confidence}
        return GateReport.of(self._http.call("POST", f"/api/experiments/{run_id}/gates",
                                             json=body))  # fmt: skip

    def scorers(self) -> builtins.list[dict[str, Any]]:
        return list(self._http.call("GET", "/api/scorers")["data"])


class Comparisons:
    def __init__(self, http: _Http):
        self._http = http

    def compare(self, runs: Sequence[str], confidence: float = 0.95) -> dict[str, Any]:
        """Baseline first (run ids or labels): paired differences and per-item diffs."""
        body = {"runs": list(runs), "confidence": confidence}
        return dict(self._http.call("POST", "/api/comparisons", json=body))


class KnowledgeBases:
    def __init__(self, http: _Http):
        self._http = http

    def list(self) -> builtins.list[dict[str, Any]]:
        return list(self._http.call("GET", "/api/kbs")["data"])

    def get(self, name: str) -> dict[str, Any]:
        return dict(self._http.call("GET", f"/api/kbs/{name}"))

    def create(self, name: str, description: str = "", **config: Any) -> dict[str, Any]:
        body = {"name": name, "description": description, **config}
        return dict(self._http.call("POST", "/api/kbs", json=body))

    def upload(self, name: str, path: str | Path, source: str | None = None) -> dict[str, Any]:
        path = Path(path)
        return dict(self._http.call("POST", f"/api/kbs/{name}/documents",
                                    params={"source": source or path.name},
                                    content=path.read_bytes()))  # fmt: skip

    def search(self, name: str, query: str, top_k: int = 5, mode: str = "hybrid") -> builtins.list[
            dict[str, Any]]:  # fmt: skip
        body = {"query": query, "top_k": top_k, "mode": mode}
        return list(self._http.call("POST", f"/api/kbs/{name}/search", json=body)["data"])


class Client:
    """A running Keel. `base_url` and `api_key` default to KEEL_URL and KEEL_API_KEY, then
    to http://127.0.0.1:8000 and the admin key Keel saved in KEEL_DATA_DIR."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, *,
                 timeout: float = 60.0, transport: httpx.BaseTransport | None = None):  # fmt: skip
        base = base_url or os.environ.get("KEEL_URL") or DEFAULT_URL
        key = api_key or os.environ.get("KEEL_API_KEY") or _local_admin_key()
        if not key:
            raise KeelAPIError(0, "no API key: pass api_key=, set KEEL_API_KEY, or start "
                               "Keel once so that its data dir holds admin.key")  # fmt: skip
        self._http = _Http(base, key, timeout, transport)
        self.datasets = Datasets(self._http)
        self.experiments = Experiments(self._http)
        self.comparisons = Comparisons(self._http)
        self.knowledge_bases = KnowledgeBases(self._http)

    @property
    def base_url(self) -> str:
        return self._http.base_url

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _local_admin_key() -> str | None:
    from keel.auth.keys import read_admin_key  # the settings only when no key was given
    from keel.settings import load_settings

    try:
        settings = load_settings().settings
    except Exception:  # unreadable settings: no local key to offer
        return None
    return read_admin_key(settings.data_dir)
