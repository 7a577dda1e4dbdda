"""Labelled text for the name/address tagger, generated with Faker from templates.

    python -m training.pii.generate --n 4000 --seed 7 --out /tmp/pii_train.jsonl

Each record is `{"text", "spans": [[start, end, entity], ...]}` with entities PERSON,
STREET_ADDRESS and ORGANIZATION (the others in the text are unlabelled on purpose: the
patterns in `keel.guard.pii` own them). Names and addresses come from many Faker locales
and in many shapes (initials, titles, upper case, "Last, First"; one-line and multi-line
addresses with units, P.O. boxes, cities and postcodes), so the tagger learns the context
and shape of a name or an address rather than a list of them.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import string
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.pii.templates import TRAIN_TEMPLATES

TRAIN_LOCALES = (
    "en_US", "en_GB", "en_AU", "en_IN", "de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL",
    "pt_BR", "pl_PL", "sv_SE", "da_DK", "fi_FI", "cs_CZ", "hu_HU", "tr_TR", "ro_RO",
    "no_NO", "hr_HR", "sk_SK", "es_AR", "fr_CH", "de_CH", "ga_IE",
)  # fmt: skip
LABELLED = {"PERSON": "PERSON", "PERSON2": "PERSON", "FIRST": "PERSON", "LAST": "PERSON",
            "ADDRESS": "STREET_ADDRESS", "ADDRESS2": "STREET_ADDRESS",
            "ORG": "ORGANIZATION", "ORG2": "ORGANIZATION"}  # fmt: skip
SLOT = re.compile(r"\{([A-Z0-9]+)\}")


def fixed_hash_seed() -> None:
    """Re-run this command under PYTHONHASHSEED=0 unless it already is.

    Some Faker locales draw from sets, whose order follows the string hash: the same seed
    gives the same text only when the hash seed is fixed too.
    """
    if os.environ.get("PYTHONHASHSEED") != "0":
        os.environ["PYTHONHASHSEED"] = "0"
        os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


@dataclass
class Record:
    text: str
    spans: list[tuple[int, int, str]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"text": self.text, "spans": [list(s) for s in self.spans]}


class Values:
    """Slot fillers drawn from one Faker per locale; `rng` decides every choice."""

    def __init__(self, locales: Sequence[str], rng: random.Random, seed: int) -> None:
        from faker import Faker

        self.rng = rng
        self.fakers = []
        for i, locale in enumerate(locales):
            fake = Faker(locale)
            fake.seed_instance(seed * 1000 + i)
            self.fakers.append(fake)

    def fake(self) -> Any:
        return self.rng.choice(self.fakers)

    @staticmethod
    def _try(fake: Any, method: str, default: str = "") -> str:
        try:
            return str(getattr(fake, method)())
        except AttributeError:
            return default

    # -- names ----------------------------------------------------------------------------

    def person(self) -> str:
        f, r = self.fake(), self.rng
        first, last = str(f.first_name()), str(f.last_name())
        roll = r.random()
        if roll < 0.35:
            name = f"{first} {last}"
        elif roll < 0.5:
            name = str(f.name())
            name = re.sub(
                r"^(?:Mr|Mrs|Ms|Miss|Dr|Prof|Herr|Frau|M|Mme|Sr|Sra|Ing|Mgr)\.?\s+", "", name
            )
        elif roll < 0.62:
            name = f"{first} {r.choice(string.ascii_uppercase)}{r.choice(['.', '', '.'])} {last}"
        elif roll < 0.7:
            name = f"{first} {f.first_name()} {last}"
        elif roll < 0.76:
            name = f"{first} {last}-{f.last_name()}"
        elif roll < 0.8:
            name = f"{r.choice(string.ascii_uppercase)}. {last}"
        elif roll < 0.84:
            particle = r.choice(["van der", "de la", "von", "de", "da", "van", "di", "Mac", "O"])
            name = f"{first} {particle} {last}"
        else:
            name = f"{first} {last}"
        case = r.random()
        if case < 0.05:
            name = name.upper()
        elif case < 0.09:
            name = name.lower()
        return name

    def first(self) -> str:
        return str(self.fake().first_name())

    def last(self) -> str:
        return str(self.fake().last_name())

    # -- addresses ------------------------------------------------------------------------

    def street(self, f: Any) -> str:
        r = self.rng
        roll = r.random()
        if roll < 0.45:
            base = str(f.street_address())
        elif roll < 0.7:
            base = f"{f.building_number()} {f.street_name()}"
        elif roll < 0.85:
            base = f"{f.street_name()} {f.building_number()}"
        else:
            # presidio-research's shape: a number, a street with its own number
            base = f"{r.randint(1, 9999)} {f.street_address()}"
        if r.random() < 0.3:
            unit = self._try(f, "secondary_address")
            if not unit:
                kind = r.choice(["Apt.", "Suite", "Unit", "Flat", "Apartment", "#"])
                unit = f"{kind} {r.randint(1, 999)}"
            base = f"{base}{r.choice([' ', ', ', chr(10) + ' '])}{unit}"
        return base

    def address(self) -> str:
        f, r = self.fake(), self.rng
        street = self.street(f)
        city, postcode = str(f.city()), str(f.postcode())
        state = self._try(f, "state_abbr") or self._try(f, "state") or "nan"
        country = str(f.current_country()) if r.random() < 0.3 else str(f.country())
        roll = r.random()
        if roll < 0.2:
            return street
        if roll < 0.35:
            return str(f.address())
        if roll < 0.5:
            return f"{street}, {city}"
        if roll < 0.62:
            return f"{street}, {postcode} {city}"
        if roll < 0.72:
            return f"{street}\n{postcode} {city}\n{country}"
        if roll < 0.82:
            return f"{street}\n{city}\n, {state}\n {country} {postcode}"
        if roll < 0.88:
            return f"{street} {city} {state}"
        if roll < 0.93:
            return f"P.O. Box {r.randint(1, 9999)}{r.choice(['', ', ' + city])}"
        return f"{street}, {city}, {state} {postcode}"

    # -- unlabelled slots -----------------------------------------------------------------

    def fill(self, slot: str) -> str:
        f, r = self.fake(), self.rng
        fillers: dict[str, Callable[[], str]] = {
            "ORG": lambda: str(f.company()),
            "ORG2": lambda: str(f.company()),
            "CITY": lambda: str(f.city()),
            "CITY2": lambda: str(f.city()),
            "COUNTRY": lambda: str(f.country()),
            "PHONE": lambda: str(f.phone_number()),
            "EMAIL": lambda: str(f.email()),
            "DATE": lambda: str(f.date()),
            "DATE2": lambda: str(f.date(pattern="%d %B %Y")),
            "JOB": lambda: str(f.job()).lower(),
            "AGE": lambda: str(r.randint(18, 95)),
            "SMALLNUM": lambda: str(r.randint(2, 12)),
            "NUMBER": lambda: str(r.randint(10000, 9999999)),
            "YEAR": lambda: str(r.randint(1950, 2030)),
            "TIME": lambda: (
                f"{r.randint(1, 12)}:{r.choice(['00', '15', '30', '45'])} {r.choice(['am', 'pm'])}"
            ),
            "MONEY": lambda: f"${r.randint(5, 900_000):,}",
            "CARD": lambda: str(f.credit_card_number()),
            "WEEKDAY": lambda: r.choice(
                ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
            ),
            "MONTH": lambda: r.choice(["January", "March", "May", "July", "October", "December"]),
            "PRODUCT": lambda: r.choice(
                [
                    "Kindle",
                    "MacBook Pro",
                    "Galaxy S24",
                    "ThinkPad",
                    "Nespresso machine",
                    "PlayStation",
                    "washing machine",
                    "sofa",
                    "Model 3",
                    "Surface Pro",
                ]
            ),
            "LANGUAGE": lambda: r.choice(
                ["French", "German", "Spanish", "Japanese", "Portuguese", "Polish", "Dutch"]
            ),
            "SOFTWARE": lambda: r.choice(
                ["Excel", "Jira", "Salesforce", "GitHub", "Zoom", "Slack", "Photoshop"]
            ),
            "HOLIDAY": lambda: r.choice(
                ["Christmas", "Easter", "Black Friday", "Thanksgiving", "Halloween"]
            ),
            "CARRIER": lambda: r.choice(["UPS", "FedEx", "DHL", "Royal Mail", "USPS", "La Poste"]),
            "RELATION": lambda: r.choice(
                [
                    "wife",
                    "husband",
                    "son",
                    "daughter",
                    "mother",
                    "father",
                    "brother",
                    "sister",
                    "friend",
                ]
            ),
        }
        return fillers[slot]()

    def value(self, slot: str) -> str:
        if slot in ("PERSON", "PERSON2"):
            return self.person()
        if slot == "FIRST":
            return self.first()
        if slot == "LAST":
            return self.last()
        if slot in ("ADDRESS", "ADDRESS2"):
            return self.address()
        return self.fill(slot)


def render(template: str, values: Values, labelled: dict[str, str] = LABELLED) -> Record:
    """`template` with its slots filled; labelled slots become spans."""
    out: list[str] = []
    spans: list[tuple[int, int, str]] = []
    at = 0
    length = 0
    for m in SLOT.finditer(template):
        literal = template[at : m.start()]
        out.append(literal)
        length += len(literal)
        value = values.value(m.group(1))
        if m.group(1) in labelled:
            spans.append((length, length + len(value), labelled[m.group(1)]))
        out.append(value)
        length += len(value)
        at = m.end()
    out.append(template[at:])
    return Record("".join(out), spans)


def generate(
    n: int,
    seed: int,
    templates: Sequence[str] = TRAIN_TEMPLATES,
    locales: Sequence[str] = TRAIN_LOCALES,
    labelled: dict[str, str] = LABELLED,
) -> list[Record]:
    rng = random.Random(seed)
    values = Values(locales, rng, seed)
    records = []
    for _ in range(n):
        record = render(rng.choice(templates), values, labelled)
        # Some texts run together: two templates in one message.
        if rng.random() < 0.15:
            extra = render(rng.choice(templates), values, labelled)
            sep = rng.choice([" ", "\n", "\n\n"])
            shift = len(record.text) + len(sep)
            record = Record(
                record.text + sep + extra.text,
                record.spans + [(s + shift, e + shift, t) for s, e, t in extra.spans],
            )
        records.append(record)
    return records


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    fixed_hash_seed()
    with args.out.open("w", encoding="utf-8") as fh:
        for record in generate(args.n, args.seed):
            fh.write(json.dumps(record.as_json(), ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
