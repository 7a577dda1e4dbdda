"""A PII test set that shares nothing with the tagger's training text but the method.

    python -m training.pii.heldout --n 500 --seed 2027 --out bench/data/pii_heldout.json

It differs from `training/pii/generate.py` in everything that could be memorised: its own
templates (chat turns, forms, e-mail signatures, tickets, CSV-like rows), its own locales
(so its name and street lists are ones training never saw: Latin-American Spanish,
Portuguese, Belgian Dutch, Slovene, Baltic, Austrian German, Indonesian, Vietnamese,
Icelandic, Azerbaijani, Swahili, New Zealand and Irish English), its own name and address
shapes, and its own seed. It labels every direct identifier, in presidio-research's
format (`full_text`, `spans` with `entity_type`, `entity_value`, `start_position`,
`end_position`), so `bench/pii.py` reads it like the dev file. Never tune on it.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import string
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from training.pii.generate import fixed_hash_seed

# ruff: noqa: E501

HELDOUT_LOCALES = (
    "es_MX", "es_CO", "es_CL", "pt_PT", "nl_BE", "sl_SI", "lt_LT", "lv_LV", "et_EE",
    "de_AT", "id_ID", "vi_VN", "is_IS", "az_AZ", "sw", "en_NZ", "en_IE",
)  # fmt: skip

HELDOUT_TEMPLATES = [
    "hey, it's {PERSON} again. still waiting on the refund for order {NUM}",
    "User: hi\nAssistant: Hello! How can I help?\nUser: I'm {PERSON}, my flat is at {ADDRESS} and the heating is broken",
    "Can you draft a letter to {PERSON} telling them the rent goes up in {MONTH}?",
    "Rewrite this politely: {PERSON} never paid me back the money, call them at {PHONE_NUMBER}",
    "Translate to English: {PERSON} wohnt in {ADDRESS}.",
    "Customer record\n- name: {PERSON}\n- street: {ADDRESS}\n- phone: {PHONE_NUMBER}\n- email: {EMAIL_ADDRESS}",
    "{PERSON};{ADDRESS_ONELINE};{PHONE_NUMBER};{EMAIL_ADDRESS}",
    "Ticket #{NUM}: {PERSON} reports that the parcel for {ADDRESS} came back undelivered.",
    "Summarise the complaint from {PERSON} ({EMAIL_ADDRESS}) about their {THING}.",
    "Kind regards\n{PERSON}\n{JOB}, {ORGANIZATION}\nT: {PHONE_NUMBER}\nE: {EMAIL_ADDRESS}",
    "Greetings {PERSON}! Your appointment with {PERSON2} is confirmed for {DAY}.",
    "Please wire the deposit from {IBAN_CODE} and mark it for {PERSON}.",
    "The payment with card {CREDIT_CARD} by {PERSON} failed twice today.",
    "Write a birthday poem for my grandmother {PERSON}.",
    "Our landlord {PERSON} wants access to {ADDRESS} on {DAY}.",
    "Who should I contact at {ORGANIZATION}? Someone told me {PERSON} handles partnerships.",
    "Employee {PERSON}, SSN {US_SSN}, started on {DAY}.",
    "Login from {IP_ADDRESS} for account of {PERSON} was flagged.",
    "Add {PERSON} to the guest list; plus-one is {PERSON2}.",
    "Forwarding on behalf of {PERSON}: please send the samples to {ADDRESS}.",
    "The courier could not find {ADDRESS}. Recipient: {PERSON}, tel. {PHONE_NUMBER}",
    "{PERSON} wrote: 'the {THING} stopped working after a week'. What should I answer?",
    "Correct the spelling in: dear {PERSON}, we recieved your aplication",
    "New lead: {PERSON} from {ORGANIZATION}, reachable at {EMAIL_ADDRESS}",
    "Remind me to call {PERSON} about the {THING}",
    "Delivery address changed from {ADDRESS} to {ADDRESS2}, requested by {PERSON}.",
    "Emergency contact for {PERSON} is {PERSON2} on {PHONE_NUMBER}.",
    "Patient {PERSON}, residing at {ADDRESS}, was seen for a follow-up on {DAY}.",
    "Is it legal for {ORGANIZATION} to keep my data after I closed the account?",
    "Compare {THING} prices in {CITY} and {CITY2}.",
    "Plan a three-day trip to {CITY} with a budget of {MONEY}.",
    "What documents do I need to rent a flat in {COUNTRY}?",
    "Explain the difference between a Roth IRA and a 401(k).",
    "The invoice from {ORGANIZATION} lists the wrong VAT rate.",
    "Pick up: {ADDRESS}\nDrop off: {ADDRESS2}\nPassenger: {PERSON}",
    "{PERSON} <{EMAIL_ADDRESS}> has invited you to edit a document.",
    "Met {PERSON} at the airport; she lives near {ADDRESS} now.",
    "Send the signed copy to {PERSON}, c/o {ORGANIZATION}, {ADDRESS}",
    "Interview notes: candidate {PERSON}, currently at {ORGANIZATION}, phone {PHONE_NUMBER}.",
    "Please stop emailing {EMAIL_ADDRESS}; {PERSON} has left the company.",
]

PRESIDIO = {
    "PERSON": "PERSON", "PERSON2": "PERSON", "ADDRESS": "STREET_ADDRESS",
    "ADDRESS2": "STREET_ADDRESS", "ADDRESS_ONELINE": "STREET_ADDRESS",
    "PHONE_NUMBER": "PHONE_NUMBER", "EMAIL_ADDRESS": "EMAIL_ADDRESS",
    "CREDIT_CARD": "CREDIT_CARD", "IBAN_CODE": "IBAN_CODE", "US_SSN": "US_SSN",
    "IP_ADDRESS": "IP_ADDRESS", "ORGANIZATION": "ORGANIZATION",
}  # fmt: skip
SLOT = re.compile(r"\{([A-Z_0-9]+)\}")


class HeldoutValues:
    def __init__(self, rng: random.Random, seed: int) -> None:
        from faker import Faker

        self.rng = rng
        self.fakers = []
        for i, locale in enumerate(HELDOUT_LOCALES):
            fake = Faker(locale)
            fake.seed_instance(seed * 7919 + i)
            self.fakers.append(fake)
        self.us = Faker("en_US")
        self.us.seed_instance(seed)
        self.gb = Faker("en_GB")
        self.gb.seed_instance(seed + 1)

    def person(self, f: Any) -> str:
        r = self.rng
        roll = r.random()
        if roll < 0.5:
            return str(f.name())
        if roll < 0.7:
            return f"{f.first_name()} {f.last_name()}"
        if roll < 0.8:
            return f"{f.first_name()} {r.choice(string.ascii_uppercase)}. {f.last_name()}"
        if roll < 0.9:
            return f"{f.first_name()} {f.last_name()} {f.last_name()}"
        return str(f.first_name())

    def address(self, f: Any, one_line: bool = False) -> str:
        text = str(f.address()) if self.rng.random() < 0.6 else str(f.street_address())
        if one_line or self.rng.random() < 0.4:
            text = ", ".join(part.strip() for part in text.split("\n"))
        return text

    def value(self, slot: str, f: Any) -> str:
        r = self.rng
        match slot:
            case "PERSON" | "PERSON2":
                return self.person(f)
            case "ADDRESS" | "ADDRESS2":
                return self.address(f)
            case "ADDRESS_ONELINE":
                return self.address(f, one_line=True)
            case "PHONE_NUMBER":
                return str(f.phone_number())
            case "EMAIL_ADDRESS":
                return str(f.free_email()) if r.random() < 0.5 else str(f.company_email())
            case "CREDIT_CARD":
                return str(self.us.credit_card_number())
            case "IBAN_CODE":
                return str(self.gb.iban())
            case "US_SSN":
                return str(self.us.ssn())
            case "IP_ADDRESS":
                return str(f.ipv4_public())
            case "ORGANIZATION":
                return str(f.company())
            case "CITY" | "CITY2":
                return str(f.city())
            case "COUNTRY":
                return str(f.country())
            case "JOB":
                return str(self.us.job())
            case "NUM":
                return str(r.randint(1000, 999999))
            case "MONEY":
                return f"{r.randint(200, 5000)} euros"
            case "DAY":
                return r.choice(["Monday", "next Tuesday", "the 14th", "Friday morning", "March 3"])
            case "MONTH":
                return r.choice(["April", "June", "September", "November"])
            case "THING":
                return r.choice(
                    ["dishwasher", "router", "e-bike", "printer", "subscription", "phone"]
                )
        raise KeyError(slot)


def generate_heldout(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    values = HeldoutValues(rng, seed)
    out = []
    for i in range(n):
        template = rng.choice(HELDOUT_TEMPLATES)
        f = rng.choice(values.fakers)
        parts: list[str] = []
        spans = []
        at = 0
        length = 0
        for m in SLOT.finditer(template):
            literal = template[at : m.start()]
            parts.append(literal)
            length += len(literal)
            value = values.value(m.group(1), f)
            if m.group(1) in PRESIDIO:
                spans.append(
                    {
                        "entity_type": PRESIDIO[m.group(1)],
                        "entity_value": value,
                        "start_position": length,
                        "end_position": length + len(value),
                    }
                )
            parts.append(value)
            length += len(value)
            at = m.end()
        parts.append(template[at:])
        out.append({"full_text": "".join(parts), "spans": spans, "template_id": i})
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="generate the held-out PII test set")
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--seed", type=int, default=2027)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    fixed_hash_seed()
    records = generate_heldout(args.n, args.seed)
    args.out.write_text(json.dumps(records, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
