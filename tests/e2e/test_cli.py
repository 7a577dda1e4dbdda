"""The CLI against a real running Keel."""

from __future__ import annotations

import pytest

from tests.support.keel_process import KeelProcess

pytestmark = pytest.mark.e2e


def test_chat_streams_an_answer_with_the_local_admin_key(keel: KeelProcess) -> None:
    result = keel.cli("chat", "Say hi", "--max-tokens", "16")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].strip()
    assert "completion tokens" in lines[-1]


def test_models_list_shows_the_bundled_models(keel: KeelProcess) -> None:
    result = keel.cli("models", "list")
    assert result.returncode == 0, result.stderr
    assert "smollm2" in result.stdout
    assert "all-minilm-l6-v2" in result.stdout


def test_chat_with_an_unknown_model_reports_the_servers_message(keel: KeelProcess) -> None:
    result = keel.cli("chat", "hi", "-m", "nope")
    assert result.returncode == 1
    assert "unknown model 'nope'" in result.stderr
