"""The PII scanner on forms, CSV rows, tables and chat turns: a second set rules were tuned on.

    python -m training.pii.forms      # --n 300 --seed 99

Builds `--n` texts in six shapes (a form with labelled fields, a CSV row, a question and
its answer, a tab-separated table, a chat turn, a courier's reply) from Faker values of 12
locales. Names, street addresses, phones and e-mails are labelled; towns, companies, job
titles and dates are not, so hiding them counts against precision. `keel.guard.pii_context`
(form labels, legal forms of companies, document numbers) was written from this set's
false positives. The held-out set (`training/pii/heldout.py`) has shapes of its own,
written separately; nothing here is taken from it.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from training.pii.validate import run

LOCALES = ("en_US", "en_GB", "de_DE", "fr_FR", "it_IT", "es_ES", "nl_NL", "pl_PL", "sv_SE",
           "pt_PT", "da_DK", "cs_CZ")  # fmt: skip
Part = tuple[str | None, str]  # (entity or None, text)


def _record(parts: Sequence[Part]) -> dict[str, Any]:
    text, spans = "", []
    for entity, value in parts:
        if entity:
            end = len(text) + len(value)
            spans.append({"entity_type": entity, "entity_value": value,
                          "start_position": len(text), "end_position": end})  # fmt: skip
        text += value
    return {"full_text": text, "spans": spans}


def records(n: int, seed: int) -> list[dict[str, Any]]:
    from faker import Faker

    rng = random.Random(seed)
    fakers = []
    for i, locale in enumerate(LOCALES):
        fake = Faker(locale)
        fake.seed_instance(seed * 1000 + i)
        fakers.append(fake)
    out = []
    for i in range(n):
        f = rng.choice(fakers)
        name, street, phone, email = f.name(), f.street_address(), f.phone_number(), f.email()
        city, job, company, date = f.city(), f.job(), f.company(), str(f.date())
        shapes: list[list[Part]] = [
            [(None, "Full name: "), ("PERSON", name), (None, f"\nJob title: {job}\nEmployer: "
             f"{company}\nStreet: "), ("STREET_ADDRESS", street), (None, f"\nCity: {city}\n"
             "Phone: "), ("PHONE_NUMBER", phone), (None, f"\nStart date: {date}")],
            [(None, f"id,name,city,company,joined\n{rng.randint(1, 999)},"), ("PERSON", name),
             (None, f",{city},{company},{date}")],
            [(None, "user: hi, can you update my profile? new address is "),
             ("STREET_ADDRESS", street), (None, f", {city}\nassistant: Sure. Which email "
             "should we use?\nuser: "), ("EMAIL_ADDRESS", email)],
            [(None, f"Q: Who handled ticket {rng.randint(1000, 99999)}?\nA: "), ("PERSON", name),
             (None, f" from {company} in {city}, on {date}.")],
            [(None, "Applicant\tCity\tOccupation\n"), ("PERSON", name), (None, f"\t{city}\t{job}")],
            [(None, "Customer: The delivery to "), ("STREET_ADDRESS", street), (None, " failed "
             f"twice. Agent: Sorry about that! Our courier in {city} will call "),
             ("PHONE_NUMBER", phone), (None, " tomorrow.")],
        ]  # fmt: skip
        out.append(_record(shapes[i % len(shapes)]))
    return out


def main(argv: Sequence[str] | None = None) -> None:
    run(argv, records, 300, 99, __doc__.splitlines()[0] if __doc__ else None)


if __name__ == "__main__":
    main()
