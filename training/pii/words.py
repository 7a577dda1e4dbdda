"""Common words the PII tagger can skip a sentence for, learned from text, never typed in.

    python -m training.pii.words      # --min-count 3 --out DIR/pii-common-words.json

It also writes a larger list, `pii-english-words.json`, learned the same way from more
text: the abstracts of `retrieval/scifact/corpus.jsonl` and every prompt, attack or benign,
of `guard/train.jsonl`, `guard/validation.jsonl` and `guard/extra/*.jsonl` (any English
prose tells which words are words). That list decides only whether a lone word the tagger
calls a name is a plain word ("Animation", "Energetic"); the smaller one keeps deciding
which sentences are read and which capitalised pairs are names, where a larger list cost
names ("Crystal Murdock").

A sentence whose only capital starts it and whose first word is a common word ("Please
keep it short.") names nobody and holds no address: the tagger need not read it, and no
name can be found in it by mistake. A word counts as common when it appears in lower case,
not at a sentence's start, at least `--min-count` times in the benign prompts of the guard's
training data (only texts written with capitals count: a text typed all in lower case says
nothing about which words are names) or in the tagger's own training templates. A word that
is a first or last name in any of the training generator's Faker locales is not common
unless it is among the most frequent words (`--function-count`), so "June" still gets read
and "My" does not.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from keel.guard.pii_tagger import (
    COMMON_WORDS_FILE,
    ENGLISH_WORDS_FILE,
    SENTENCE_BREAK,
    WORD,
    artifact_dir,
)
from training.pii.generate import TRAIN_LOCALES
from training.pii.templates import TRAIN_TEMPLATES

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
GUARD_TRAIN = SHARED / "guard" / "train.jsonl"
SCIFACT = SHARED / "retrieval" / "scifact" / "corpus.jsonl"
GUARD_VALIDATION = SHARED / "guard" / "validation.jsonl"
GUARD_EXTRA = tuple(sorted((SHARED / "guard" / "extra").glob("*.jsonl")))
_SLOT = re.compile(r"\{[A-Z0-9]+\}")


def lower_counts(texts: Iterable[str]) -> Counter[str]:
    """How often each word appears in lower case after a sentence's first word, or in capitals."""
    counts: Counter[str] = Counter()
    for text in texts:
        if not re.search(r"[A-Z]", text):
            continue
        for sentence in SENTENCE_BREAK.split(text):
            words = WORD.findall(sentence)
            for word in words[1:]:
                if word.islower():
                    counts[word] += 1
            for word in words:
                # An acronym ("JSON", "HTML") is written in capitals wherever it stands.
                if len(word) > 1 and word.isupper() and word.isalpha():
                    counts[word.lower()] += 1
    return counts


def faker_names(locales: Sequence[str]) -> set[str]:
    from faker import Faker

    names: set[str] = set()
    for locale in locales:
        person = Faker(locale).provider("faker.providers.person")
        for attr in ("first_names", "last_names", "first_names_male", "first_names_female"):
            for name in getattr(person, attr, ()) or ():
                words = WORD.findall(str(name))
                if len(words) == 1:  # "The Elder" is a surname; "the" is still a common word
                    names.add(words[0].lower())
    return names


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--guard-data", type=Path, default=GUARD_TRAIN)
    parser.add_argument("--min-count", type=int, default=3)
    parser.add_argument("--function-count", type=int, default=100)
    parser.add_argument("--out", type=Path, default=artifact_dir() / COMMON_WORDS_FILE)
    parser.add_argument("--english-out", type=Path, default=artifact_dir() / ENGLISH_WORDS_FILE)
    args = parser.parse_args(argv)

    benign = []
    with args.guard_data.open(encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            if row["label"] == 0:
                benign.append(str(row["text"]))
    counts = lower_counts(benign)
    templates = [_SLOT.sub(" ", t) for t in TRAIN_TEMPLATES]
    from_templates = {w for t in templates for w in WORD.findall(t) if w.islower()}
    names = faker_names(TRAIN_LOCALES)
    words = {w for w, n in counts.items() if n >= args.min_count} | from_templates
    # A name is not a common word, unless it is also one of the most frequent words (the
    # Swedish first name "My").
    words -= {w for w in names if counts[w] < args.function_count}
    _write_words(args.out, args, "lower-case words that start sentences naming nobody",
                 [f"{len(benign)} benign prompts of shared/data/guard/train.jsonl",
                  "training/pii/templates.py"],
                 "first and last names of the training generator's Faker locales",
                 words)  # fmt: skip
    # Any English prose will do for this list, attacks as well as benign prompts: it says
    # which words are words, not which texts are safe.
    more = []
    with SCIFACT.open(encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            more.append(f"{row.get('title', '')}. {row.get('text', '')}")
    for path in (args.guard_data, GUARD_VALIDATION, *GUARD_EXTRA):
        with path.open(encoding="utf-8") as fh:
            more += [str(json.loads(line)["text"]) for line in fh]
    more_counts = lower_counts(more)
    english = {w for w, n in more_counts.items() if n >= args.min_count} - words
    # Any locale's names, not only the training generator's: a lone word this list drops
    # should never be someone's name anywhere ("Long", "Nam", "Amani").
    from faker.config import AVAILABLE_LOCALES

    every_name = faker_names(sorted(AVAILABLE_LOCALES))
    english -= {w for w in every_name if more_counts[w] < args.function_count}
    _write_words(args.english_out, args,
                 "lower-case words a lone tagged name may not be; beyond the common words",
                 ["abstracts of shared/data/retrieval/scifact/corpus.jsonl",
                  "every prompt of shared/data/guard/{train,validation}.jsonl and "
                  "shared/data/guard/extra/*.jsonl"],
                 "first and last names of every Faker locale", english)  # fmt: skip
    print(json.dumps({"words": len(words), "out": str(args.out), "english_words": len(english)}))


def _write_words(path: Path, args: argparse.Namespace, about: str, learned_from: list[str],
                 names_removed: str, words: set[str]) -> None:  # fmt: skip
    """Write a word list artifact with what it is and how it was made."""
    made = {"about": about, "made_by": "python -m training.pii.words",
            "learned_from": learned_from, "min_count": args.min_count,
            "names_removed": names_removed, "function_count": args.function_count,
            "words": sorted(words)}  # fmt: skip
    path.write_text(json.dumps(made, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
