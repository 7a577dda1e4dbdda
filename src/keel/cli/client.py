"""How CLI commands find and call a running Keel: base URL and key, with clear failures."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console

from keel.auth.keys import read_admin_key
from keel.settings import SettingsError, load_settings

err = Console(stderr=True, soft_wrap=True)


def fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code)


def resolve_target(url: str | None, key: str | None, config: Path | None) -> tuple[str, str]:
    """Base URL and API key: flags, then KEEL_URL / KEEL_API_KEY, then settings and admin.key."""
    try:
        settings = load_settings(config_file=config).settings
    except SettingsError as exc:
        raise fail(str(exc)) from exc
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    base = url or os.environ.get("KEEL_URL") or f"http://{host}:{settings.port}"
    token = key or os.environ.get("KEEL_API_KEY") or read_admin_key(settings.data_dir)
    if not token:
        raise fail(
            f"no API key: pass --key, set KEEL_API_KEY, or start Keel once so that "
            f"{settings.data_dir / 'admin.key'} exists"
        )
    return base.rstrip("/"), token


def describe_http_error(response: httpx.Response) -> str:
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.text[:300]
    return f"{response.status_code}: {message}"


def connection_hint(base: str, exc: httpx.HTTPError) -> str:
    return f"cannot reach Keel at {base} ({exc.__class__.__name__}); is 'keel serve' running?"


class Api:
    """The admin API of a running Keel, for CLI commands: JSON in, JSON out, clear failures."""

    def __init__(self, url: str | None, key: str | None, config: Path | None):
        self.base, token = resolve_target(url, key, config)
        self._headers = {"Authorization": f"Bearer {token}"}

    def call(self, method: str, path: str, body: object = None, **params: str | None) -> Any:
        try:
            response = httpx.request(
                method,
                f"{self.base}{path}",
                json=body,
                params={k: v for k, v in params.items() if v is not None} or None,
                headers=self._headers,
                timeout=60,
            )
        except httpx.HTTPError as exc:
            raise fail(connection_hint(self.base, exc)) from exc
        if response.status_code >= 400:
            raise fail(describe_http_error(response))
        return response.json()


UrlOption = Annotated[str | None, typer.Option(help="Keel base URL (default from settings).")]
KeyOption = Annotated[str | None, typer.Option(help="API key (default: the local admin key).")]
ConfigOption = Annotated[Path | None, typer.Option("--config", "-c", help="keel.yaml.")]
