"""The simple scanners: invisible text, banned substrings, regexes, length."""

# ruff: noqa: RUF001  (look-alike letters are the point of these tests)

from __future__ import annotations

import pytest

from keel.guard.base import ScanContext
from keel.guard.text_rules import (
    BannedSubstringsScanner,
    InvisibleTextScanner,
    MaxLengthScanner,
    RegexScanner,
)

CTX = ScanContext()


def test_invisible_text_is_stripped_or_blocked() -> None:
    text = "hello\u200b wor\u2060ld"
    assert InvisibleTextScanner().scan(text, CTX).redacted == "hello world"
    assert InvisibleTextScanner(mode="block").scan(text, CTX).action == "block"
    assert InvisibleTextScanner().scan("plain text", CTX).action == "allow"


def test_banned_substrings_match_whole_words_and_styled_letters() -> None:
    scanner = BannedSubstringsScanner(["project falcon"], mode="redact")
    assert scanner.scan("About Project Falcon: ...", CTX).redacted == "About [REDACTED]: ..."
    assert scanner.scan("ｐｒｏｊｅｃｔ ｆａｌｃｏｎ", CTX).action == "block"
    assert BannedSubstringsScanner(["ass"]).scan("first class", CTX).action == "allow"


def test_regex_scanner_redacts_matches() -> None:
    scanner = RegexScanner([r"TICKET-\d+"], mode="redact", replacement="<TICKET>")
    assert scanner.scan("see TICKET-42", CTX).redacted == "see <TICKET>"
    with pytest.raises(ValueError, match="invalid regex"):
        RegexScanner(["("])


def test_max_length_blocks_or_truncates() -> None:
    assert MaxLengthScanner(5).scan("123456", CTX).action == "block"
    assert MaxLengthScanner(5, mode="truncate").scan("123456", CTX).redacted == "12345"
    assert MaxLengthScanner(5).scan("12345", CTX).action == "allow"
