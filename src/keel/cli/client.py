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
    base, token, _ = resolve_target_and_source(url, key, config)
    return base, token


def resolve_target_and_source(
    url: str | None, key: str | None, config: Path | None
) -> tuple[str, str, str]:
    """Base URL, API key, and where the key came from (said when the server refuses it)."""
    try:
        loaded = load_settings(config_file=config)
    except SettingsError as exc:
        raise fail(str(exc)) from exc
    settings = loaded.settings
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    base = url or os.environ.get("KEEL_URL") or f"http://{host}:{settings.port}"
    if key:
        token, source = key, "the key given with --key"
    elif os.environ.get("KEEL_API_KEY"):
        token, source = os.environ["KEEL_API_KEY"], "the key in KEEL_API_KEY"
    else:
        path = settings.data_dir / "admin.key"
        token = read_admin_key(settings.data_dir) or ""
        source = (
            f"the admin key in {path}, from data dir {settings.data_dir} (set by "
            f"{loaded.sources['data_dir']}); if Keel runs with another data dir, set "
            "KEEL_DATA_DIR to it, or pass --key / KEEL_API_KEY"
        )
    if not token:
        raise fail(
            f"no API key: pass --key, set KEEL_API_KEY, or start Keel once so that "
            f"{settings.data_dir / 'admin.key'} exists"
        )
    return base.rstrip("/"), token, source


def describe_http_error(response: httpx.Response, key_source: str | None = None) -> str:
    """`status: message`; a 401 also says which key was tried (`key_source`)."""
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.text[:300]
    if response.status_code == 401 and key_source:
        message = f"{message} (the key tried: {key_source})"
    return f"{response.status_code}: {message}"


def connection_hint(base: str, exc: httpx.HTTPError) -> str:
    return f"cannot reach Keel at {base} ({exc.__class__.__name__}); is 'keel serve' running?"


class Api:
    """The admin API of a running Keel, for CLI commands: JSON in, JSON out, clear failures."""

    def __init__(self, url: str | None, key: str | None, config: Path | None):
        self.base, token, self.key_source = resolve_target_and_source(url, key, config)
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
            raise fail(describe_http_error(response, self.key_source))
        return response.json()


UrlOption = Annotated[str | None, typer.Option(help="Keel base URL (default from settings).")]
KeyOption = Annotated[str | None, typer.Option(help="API key (default: the local admin key).")]
ConfigOption = Annotated[Path | None, typer.Option("--config", "-c", help="keel.yaml.")]
