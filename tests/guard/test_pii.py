"""PII recognizers and the PII scanner's actions."""

from __future__ import annotations

from keel.guard.anonymize import Vault
from keel.guard.base import ScanContext
from keel.guard.pii import PiiScanner, detect, iban_valid, luhn_valid


def entities(text: str) -> dict[str, str]:
    return {m.entity: m.value for m in detect(text)}


def test_a_luhn_valid_card_is_found_and_an_invalid_one_is_not() -> None:
    assert luhn_valid("4111111111111111")
    assert not luhn_valid("4111111111111112")
    assert entities("card 4111 1111 1111 1111")["CREDIT_CARD"] == "4111 1111 1111 1111"
    assert "CREDIT_CARD" not in entities("card 4111 1111 1111 1112")


def test_iban_needs_a_valid_checksum() -> None:
    assert iban_valid("GB82 WEST 1234 5698 7654 32")
    assert entities("IBAN GB82 WEST 1234 5698 7654 32")["IBAN"] == "GB82 WEST 1234 5698 7654 32"
    assert "IBAN" not in entities("IBAN GB83 WEST 1234 5698 7654 32")


def test_emails_phones_ips_and_national_ids() -> None:
    found = entities(
        "Mail ana@example.org, call +44 20 7946 0958, server 10.0.0.12 or 2001:db8::1, "
        "SSN 123-45-6789, NINO AB 12 34 56 C."
    )
    assert found["EMAIL"] == "ana@example.org"
    assert found["PHONE"] == "+44 20 7946 0958"
    assert found["IP_ADDRESS"] in ("10.0.0.12", "2001:db8::1")
    assert found["US_SSN"] == "123-45-6789"
    assert found["UK_NINO"] == "AB 12 34 56 C"


def test_invalid_looking_values_are_not_pii() -> None:
    found = entities("version 999.1.2.3, SSN 000-12-3456, build 2024-05-01 10:00")
    assert found == {}


def test_names_after_a_cue_and_street_addresses() -> None:
    found = entities("Hello, my name is Maria Gonzalez and I live at 221 Baker Street.")
    assert found["PERSON"] == "Maria Gonzalez"
    assert found["STREET_ADDRESS"] == "221 Baker Street"


def test_mask_block_and_anonymize_modes() -> None:
    text = "Write to ana@example.org or bob@example.org, again ana@example.org."
    masked = PiiScanner(mode="mask").scan(text, ScanContext())
    assert masked.action == "redact"
    assert masked.redacted == "Write to <EMAIL> or <EMAIL>, again <EMAIL>."
    assert PiiScanner(mode="block").scan(text, ScanContext()).action == "block"
    vault = Vault()
    anon = PiiScanner(mode="anonymize").scan(text, ScanContext(vault=vault))
    assert anon.redacted == "Write to <EMAIL_1> or <EMAIL_2>, again <EMAIL_1>."
    assert vault.value("<EMAIL_2>") == "bob@example.org"


def test_findings_do_not_contain_the_values() -> None:
    verdict = PiiScanner(mode="flag").scan("SSN 123-45-6789", ScanContext())
    assert verdict.action == "flag"
    (finding,) = verdict.findings
    assert "123-45-6789" not in (finding.detail + finding.kind)
    assert len(finding.value_hash) == 16
