"""`keel finetune`: every command documents itself, and --canary splits a route as asked."""

from __future__ import annotations

from typer.testing import CliRunner

from keel.cli.app import app
from keel.cli.finetune import canary_split


def test_every_finetune_command_has_help() -> None:
    runner = CliRunner()
    for command in ("create", "list", "show", "watch", "cancel"):
        result = runner.invoke(app, ["finetune", command, "--help"])
        assert result.exit_code == 0, result.output
        assert "Usage" in result.output


def test_a_canary_takes_its_share_from_the_current_targets() -> None:
    assert canary_split({"smollm2@1": 100}, "smollm2@2", 10) == {"smollm2@1": 90, "smollm2@2": 10}
    split = canary_split({"a@1": 3, "a@2": 1, "a@3": 5}, "a@3", 20)
    assert split == {"a@1": 60, "a@2": 20, "a@3": 20}


def test_canary_without_held_out_data_is_refused_before_any_upload() -> None:
    result = CliRunner().invoke(app, ["finetune", "create", "x.jsonl", "--canary", "10"])
    assert result.exit_code != 0
    assert "--canary needs held-out data" in result.output
