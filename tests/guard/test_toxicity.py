"""The offline toxicity scanner (alt-profanity-check)."""

from __future__ import annotations

import pytest

from keel.guard.base import ScanContext

pytest.importorskip("profanity_check", reason="the toxicity extra is not installed")

from keel.guard.toxicity import ToxicityScanner

CTX = ScanContext(role="assistant", direction="output")


def test_an_insult_is_blocked_and_everyday_violent_words_are_not() -> None:
    scanner = ToxicityScanner()
    assert scanner.scan("You are a worthless idiot, shut up.", CTX).action == "block"
    assert scanner.scan("Kill the process with SIGTERM, then restart it.", CTX).action == "allow"


def test_one_abusive_sentence_in_a_long_answer_is_not_averaged_away() -> None:
    answer = "Here is the summary of the report. " * 20 + "You are a pathetic moron."
    verdict = ToxicityScanner().scan(answer, CTX)
    assert verdict.action == "block"
    assert answer[verdict.findings[0].start : verdict.findings[0].end].strip().startswith("You")
