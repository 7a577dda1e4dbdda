"""`keel chat`: send one prompt to a running Keel and stream the answer to the terminal."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console

from keel.cli.client import (
    connection_hint,
    describe_http_error,
    fail,
    resolve_target_and_source,
)

out = Console(highlight=False)


def chat(
    prompt: Annotated[str, typer.Argument(help="What to ask.")],
    model: Annotated[str, typer.Option("--model", "-m", help="Model id.")] = "smollm2",
    system: Annotated[str | None, typer.Option("--system", "-s", help="System prompt.")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Most tokens to generate.")] = None,
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature.")] = None,
    url: Annotated[str | None, typer.Option(help="Keel base URL (default from settings).")] = None,
    key: Annotated[str | None, typer.Option(help="API key (default: the local admin key).")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="keel.yaml.")] = None,
) -> None:
    """Chat with a model through Keel, streaming tokens as they arrive."""
    base, token, source = resolve_target_and_source(url, key, config)
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": prompt})
    body: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    if temperature is not None:
        body["temperature"] = temperature
    usage: dict[str, Any] | None = None
    try:
        with (
            httpx.Client(timeout=httpx.Timeout(600, connect=5)) as client,
            client.stream(
                "POST",
                f"{base}/v1/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {token}"},
            ) as response,
        ):
            if response.status_code != 200:
                response.read()
                raise fail(describe_http_error(response, source))
            for line in response.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                event = json.loads(line[6:])
                if "error" in event:
                    raise fail(event["error"].get("message", "stream failed"))
                usage = event.get("usage") or usage
                for choice in event.get("choices", []):
                    out.print((choice.get("delta") or {}).get("content") or "", end="")
    except httpx.HTTPError as exc:
        raise fail(connection_hint(base, exc)) from exc
    out.print()
    if usage:
        out.print(
            f"[dim]{model} · {usage['prompt_tokens']} prompt + "
            f"{usage['completion_tokens']} completion tokens[/]"
        )
