"""Reversible anonymization, whole and streamed."""

from __future__ import annotations

import pytest

from keel.guard.anonymize import Deanonymizer, Vault
from keel.guard.base import ScanContext
from keel.guard.pii import PiiScanner

TEXT = "Email ana@example.org and call +1 415 555 0134; ana@example.org is my work address."


def anonymized() -> tuple[str, Vault]:
    vault = Vault()
    verdict = PiiScanner(mode="anonymize").scan(TEXT, ScanContext(vault=vault))
    assert verdict.redacted is not None
    return verdict.redacted, vault


def test_the_same_value_gets_the_same_placeholder_and_restores() -> None:
    text, vault = anonymized()
    assert "ana@example.org" not in text
    assert text.count("<EMAIL_1>") == 2
    assert Deanonymizer(vault).restore(text) == TEXT


def test_placeholders_already_in_the_text_are_never_reused() -> None:
    vault = Vault()
    text = "literal <EMAIL_1> then ana@example.org"
    out = PiiScanner(mode="anonymize").scan(text, ScanContext(vault=vault)).redacted
    assert out == "literal <EMAIL_1> then <EMAIL_2>"


def model_answer(vault: Vault) -> str:
    return "Sure! I will write to <EMAIL_1> and ring <PHONE_1> today. <EMAIL_1> works."


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 11])
def test_streaming_restore_with_chunk_boundaries_inside_placeholders(size: int) -> None:
    _, vault = anonymized()
    answer = model_answer(vault)
    restorer = Deanonymizer(vault).stream()
    out = "".join(restorer.feed(answer[i : i + size]) for i in range(0, len(answer), size))
    out += restorer.flush()
    assert out == Deanonymizer(vault).restore(answer)
    assert "ana@example.org" in out
    assert "<EMAIL_1>" not in out


def test_every_split_point_of_a_placeholder_restores() -> None:
    _, vault = anonymized()
    answer = "to <EMAIL_1>."
    for cut in range(len(answer) + 1):
        restorer = Deanonymizer(vault).stream()
        out = restorer.feed(answer[:cut]) + restorer.feed(answer[cut:]) + restorer.flush()
        assert out == "to ana@example.org.", cut


def test_the_restorer_holds_back_only_a_possible_placeholder() -> None:
    _, vault = anonymized()
    restorer = Deanonymizer(vault).stream()
    assert restorer.feed("a < b and <EMA") == "a < b and "
    assert restorer.held == len("<EMA")
    assert restorer.feed("IL_1> ok") == "ana@example.org ok"
    assert restorer.feed("x <b>") == "x <b>"  # not a placeholder this vault issued
