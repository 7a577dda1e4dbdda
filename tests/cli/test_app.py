from __future__ import annotations

from pathlib import Path

import click
import pytest
from typer.main import get_command
from typer.testing import CliRunner

import keel
from keel.cli.app import app

runner = CliRunner()


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [prefix]
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found += _commands(command, (*prefix, name))
        else:
            found.append((*prefix, name))
    return found


ALL_COMMANDS = _commands(get_command(app))  # type: ignore[arg-type]


@pytest.mark.parametrize("path", ALL_COMMANDS, ids=lambda p: " ".join(p) or "keel")
def test_every_command_has_help(path: tuple[str, ...]) -> None:
    result = runner.invoke(app, [*path, "--help"])
    assert result.exit_code == 0
    assert "Usage" in result.output
    assert len(result.output.splitlines()) > 3


def test_version() -> None:
    result = runner.invoke(app, ["version"])
    assert result.output.strip() == f"keel {keel.__version__}"


def test_config_show_prints_values_and_sources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEEL_PORT", "9123")
    monkeypatch.setenv("KEEL_DATABASE_URL", "postgresql://keel:topsecret@127.0.0.1/keel")
    monkeypatch.setenv("COLUMNS", "250")
    config = tmp_path / "keel.yaml"
    config.write_text("log_level: debug\n")
    result = runner.invoke(app, ["config", "show", "--config", str(config)])
    assert result.exit_code == 0
    rows = {line.split("│")[1].strip(): line for line in result.output.splitlines() if "│" in line}
    assert "9123" in rows["port"]
    assert "env" in rows["port"]
    assert "file" in rows["log_level"]
    assert "topsecret" not in result.output


def test_chat_without_a_server_says_how_to_fix_it(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["chat", "hi", "--url", "http://127.0.0.1:9", "--key", "keel_sk_x_y"]
    )
    assert result.exit_code == 1
    assert "is 'keel serve' running?" in result.output


def test_chat_without_a_key_says_where_keys_come_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KEEL_API_KEY", raising=False)
    monkeypatch.setenv("KEEL_DATA_DIR", str(tmp_path))
    result = runner.invoke(app, ["chat", "hi"])
    assert result.exit_code == 1
    assert "admin.key" in result.output
