"""How CLI commands find and call a running Keel: base URL and key, with clear failures."""

from __future__ import annotations

import os
from pathlib import Path

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
