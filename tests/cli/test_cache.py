from __future__ import annotations

from typer.testing import CliRunner

from keel.cli.app import app

runner = CliRunner()


def test_purge_without_a_filter_asks_for_one_or_all() -> None:
    result = runner.invoke(app, ["cache", "purge"])
    assert result.exit_code == 1
    assert "--all" in result.output


def test_cache_commands_are_registered() -> None:
    result = runner.invoke(app, ["cache", "--help"])
    assert result.exit_code == 0
    assert "stats" in result.output
    assert "purge" in result.output
