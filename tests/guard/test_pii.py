"""PII recognizers and the PII scanner's actions."""

# ruff: noqa: RUF001  (a look-alike letter is the point of one address below)

from __future__ import annotations

import re
from typing import cast

from keel.guard.anonymize import Vault
from keel.guard.base import ScanContext
from keel.guard.pii import (
    _ADDRESS,
    HOUSE_NUMBER_AHEAD,
    NEED_DIGIT,
    RECOGNIZERS,
    PiiScanner,
    detect,
    iban_valid,
    luhn_valid,
)
from keel.guard.pii_spans import PiiMatch, join_addresses
from keel.guard.pii_tagger import NameTagger, TaggedSpan

ADDRESSES = [
    "221 Baker Street, London",
    "Hauptstraße 5, 10115 Berlin; Bahnhofstr. 12a; Mannerheimintie 3",
    "rue de la Paix 12, via Roma 3, 12 rue du Bac, Calle Mayor 7",
    "Apt 4B, Suite #200, P.O. Box 123, PSC 1234, Box 5678 APO AE 09876",
    "Ring 3 and the string 3 and a tie 12 and Kungsgatan   44 and ×weg 5",
]


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


def test_the_house_number_lookahead_changes_no_address(pii_texts: list[str]) -> None:
    without = re.compile(_ADDRESS.pattern.replace(HOUSE_NUMBER_AHEAD, ""), _ADDRESS.flags)
    assert without.pattern != _ADDRESS.pattern
    for text in [*ADDRESSES, *pii_texts]:
        expected = [m.span() for m in without.finditer(text)]
        assert [m.span() for m in _ADDRESS.finditer(text)] == expected, text


def test_recognizers_skipped_without_digits_find_nothing_there(pii_texts: list[str]) -> None:
    for text in [*ADDRESSES, *pii_texts]:
        digitless = re.sub(r"\d", "", text)
        for entity in NEED_DIGIT:
            assert list(RECOGNIZERS[entity](digitless)) == [], (entity, digitless)


def test_a_number_that_names_a_document_is_no_phone_but_a_called_number_is() -> None:
    for text in ("Your ticket number is 9482326.", "Ms Obi called about invoice 4378183."):
        assert "PHONE" not in entities(text), text
    assert entities("Please call me on 4378183.")["PHONE"] == "4378183"


def test_address_lines_join_into_one_address_with_the_postcode_after_them() -> None:
    text = "Ship to:\n> Bahnhofstr. 12a\n> Apt 4B\n> 10115 Berlin"
    addresses = [m.value for m in detect(text) if m.entity == "STREET_ADDRESS"]
    # Hidden as two pieces, the postcode between the lines would reach the model.
    assert addresses == ["Bahnhofstr. 12a\n> Apt 4B\n> 10115"]


def test_a_driver_licence_number_is_found_after_a_cue_that_names_it() -> None:
    for text, value in (
        ("My driver's license number is D4410297.", "D4410297"),
        ("my drivers licence number is 5130634", "5130634"),
        ("Driving licence no: 2270-66-1551", "2270-66-1551"),
    ):
        assert entities(text).get("DRIVER_LICENSE") == value, text
    # Without the cue a number of that shape is something else.
    assert "DRIVER_LICENSE" not in entities("Your order D4410297 ships today.")


def test_a_military_post_address_is_one_address_in_any_case() -> None:
    for text in ("Send it to USCGC Halvorsen\nFPO AP 55123 please.",
                 "may i have it sent to usns brandt\nfpo ae 44102?"):  # fmt: skip
        value = entities(text).get("STREET_ADDRESS", "")
        assert value.lower().startswith("us"), text
        assert value.endswith(("55123", "44102")), text


def test_a_country_and_postcode_line_and_a_house_number_join_the_address() -> None:
    text = "Deliver to:\n>935 69 Gordon Terrace\n>Belgium 42940\nThanks"
    street = text.index("69 Gordon Terrace")
    found = join_addresses(
        text, [PiiMatch("STREET_ADDRESS", street, street + len("69 Gordon Terrace"), 0.8, "")]
    )
    assert [text[m.start : m.end] for m in found] == ["935 69 Gordon Terrace\n>Belgium 42940"]


class _FixedTagger:
    """A tagger that returns the spans it was given: what the rules after it do, alone."""

    common_words = frozenset[str]()
    english_words = frozenset({"agent"})

    def __init__(self, text: str, spans: dict[str, str]) -> None:
        self.spans = [
            TaggedSpan(entity, text.index(value), text.index(value) + len(value), 0.9)
            for value, entity in spans.items()
        ]

    def tag_with_support(self, text: str) -> tuple[list[TaggedSpan], None]:
        return self.spans, None


def test_an_address_with_no_number_and_no_street_word_is_read_as_a_name() -> None:
    text = "Johan Vos moved to Maple Court\nCity: Coimbra\nAgent: sorry about that"
    spans = dict.fromkeys(("Johan Vos", "Maple Court", "Coimbra", "Agent"), "STREET_ADDRESS")
    tagger = _FixedTagger(text, spans)
    found = {m.value: m.entity for m in detect(text, tagger=cast(NameTagger, tagger))}
    # The name the tagger took for an address is still hidden, as a name; a street word
    # keeps an address; a town field and a common word are no PII.
    assert found == {"Johan Vos": "PERSON", "Maple Court": "STREET_ADDRESS"}


def _found(text: str, spans: dict[str, str]) -> dict[str, str]:
    tagger = _FixedTagger(text, spans)
    return {m.value: m.entity for m in detect(text, tagger=cast(NameTagger, tagger))}


def test_surnames_listed_where_a_firm_is_named_are_no_people() -> None:
    text = (
        "Kevin King is from Webb, Smith and Hunt in Leeds.\n"
        "I work for Lutz, Downs and Gray.\n"
        "Best regards,\nJane Pinto\nEstrada, Morris and Nicholson\n"
        "Our founders: Kónya, Becker and Vasquez.\n"
        "A gift from Anna, Maria, Eve and John."
    )
    names = ("Kevin King", "Webb", "Smith", "Hunt", "Lutz", "Downs", "Gray", "Jane Pinto")
    names += ("Estrada", "Morris", "Nicholson", "Kónya", "Becker", "Vasquez", "Anna", "Eve")
    found = _found(text, dict.fromkeys(names, "PERSON"))
    # The firms go; people listed after a colon, and a list longer than a firm's, stay.
    assert found == dict.fromkeys(
        ("Kevin King", "Jane Pinto", "Kónya", "Becker", "Vasquez", "Anna", "Maria", "Eve", "John"),
        "PERSON",
    )


def test_a_double_surname_after_at_or_the_is_a_firm_but_not_after_a_given_name() -> None:
    text = (
        "Lia works at Thill-Thill. The Bargetze-Hasler office opens. I met Brooke Pierce-Crawford."
    )
    spans = dict.fromkeys(("Thill-Thill", "Bargetze-Hasler", "Brooke Pierce-Crawford"), "PERSON")
    assert _found(text, spans) == {"Brooke Pierce-Crawford": "PERSON"}


def test_places_by_their_particles_shape_and_landmark_are_no_people() -> None:
    text = (
        "Ivo Janda lives in Ledeč nad Sázavou. The Golden Gate Bridge was shut. A drummer from "
        "South Debra, one from Martinezview and one from West Yasmina came. Nina Hall called."
    )
    names = ("Ivo Janda", "Sázavou", "Golden", "South Debra", "Martinezview", "Yasmina")
    names += ("Nina Hall",)
    assert _found(text, dict.fromkeys(names, "PERSON")) == dict.fromkeys(
        ("Ivo Janda", "Nina Hall"), "PERSON"
    )


def test_a_name_ending_in_a_legal_form_is_a_company() -> None:
    text = "Wolf Hornich from Zänker AG & Co. OHG and Tiago Leal from Esteves S/A called."
    spans = dict.fromkeys(("Wolf Hornich", "AG & Co. OHG", "Tiago Leal", "Esteves S/A"), "PERSON")
    assert _found(text, spans) == dict.fromkeys(("Wolf Hornich", "Tiago Leal"), "PERSON")
    # A name the tagger ran on into the company's line below it is still hidden.
    text = "Best regards,\nJane Hilbert\nWilson Inc\njane@example.org"
    found = _found(text, {"Jane Hilbert\nWilson Inc": "PERSON"})
    assert found["Jane Hilbert\nWilson Inc"] == "PERSON"


def test_a_landmark_after_a_name_in_the_next_sentence_does_not_hide_the_name() -> None:
    text = "Thanks, Nathalie The Amazon River flows through Brazil."
    assert _found(text, {"Nathalie": "PERSON"})["Nathalie"] == "PERSON"


def test_a_polish_street_is_an_address() -> None:
    found = detect("The delivery to ul. Dobra 53 and al. Jana Pawła II 12/3 failed.")
    assert [m.value for m in found if m.entity == "STREET_ADDRESS"] == [
        "ul. Dobra 53",
        "al. Jana Pawła II 12/3",
    ]


def test_the_town_after_a_street_on_its_line_joins_the_address() -> None:
    text = "new address is 12 Rua das Flores, Vila Nova de Gaia\nthanks"
    spans = {"12 Rua das Flores": "STREET_ADDRESS", "Gaia": "PERSON"}
    assert _found(text, spans) == {"12 Rua das Flores, Vila Nova de Gaia": "STREET_ADDRESS"}


def test_a_firm_said_to_be_one_or_named_after_a_person_and_of_is_no_person() -> None:
    text = (
        "Telenav is a design agency based in Kyiv. Ana is a bank teller. "
        "Rościsław Dudek of Lexisnexis spoke."
    )
    names = ("Telenav", "Ana", "Rościsław Dudek", "Lexisnexis")
    assert _found(text, dict.fromkeys(names, "PERSON")) == dict.fromkeys(
        ("Ana", "Rościsław Dudek"), "PERSON"
    )


def test_a_phone_number_stays_on_its_line_and_a_label_after_it_is_a_cue() -> None:
    # A CSV row's date and the next row's id are no phone number.
    assert "PHONE" not in entities("id,name,joined\n1,Ana,2018-06-20\n12,Rui,2019-01-02")
    # "office" after seven digits says it is a phone, as "call" before them would.
    assert entities("Ines Sousa\nunit 1009\n781 1704 office")["PHONE"] == "781 1704"


def test_an_address_run_across_csv_cells_keeps_no_town_company_or_date() -> None:
    text = "id,name,city,company,joined\n6,Nancy Miller,Port Frankfurt,Burns-Johnson,1972-06-23"
    spans = {"Nancy Miller": "PERSON", "Frankfurt,Burns-Johnson,1972-06-23": "STREET_ADDRESS"}
    assert _found(text, spans) == {"Nancy Miller": "PERSON"}
