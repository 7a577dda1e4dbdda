"""A labelled set of query pairs for the semantic cache: should the second reuse the first?

    .venv/bin/python bench/cache_pairs.py [--summary]

`pairs()` returns (cached query, new query, label, kind): label "hit" for paraphrases
(the cached answer is right for the new query) and "miss" for near-misses whose answer
differs: negations, swapped entities, another entity, different numbers, and reversed
questions (the opposite direction or operation). Pairs come from hand-written templates
filled from small lists with a fixed seed, so the set is the same on every run.

Some near-misses use words that keel.cache.verify does not list (hire/fire, arrive/leave,
lower-case entities), so the set also measures what verification misses.
"""

from __future__ import annotations

import argparse
import json
import random
from collections import Counter
from typing import NamedTuple


class Pair(NamedTuple):
    cached: str
    query: str
    label: str  # "hit" or "miss"
    kind: str


SEED = 7

# -- paraphrases: each intent has several wordings of one question ---------------------

TOOLS = ["Excel", "Google Sheets", "Photoshop", "Git", "Docker", "Slack", "Outlook", "VS Code",
         "Jira", "Figma"]  # fmt: skip
ACTIONS = {
    "Excel": ["freeze the top row", "merge two cells", "remove duplicate rows"],
    "Google Sheets": ["share a sheet with a colleague", "add a dropdown list"],
    "Photoshop": ["remove the background of an image", "resize a layer"],
    "Git": ["undo my last commit", "rename a branch", "see the history of a file"],
    "Docker": ["list running containers", "clean up unused images"],
    "Slack": ["set a reminder", "mute a channel"],
    "Outlook": ["set up an automatic reply", "recall a sent email"],
    "VS Code": ["change the color theme", "format a document"],
    "Jira": ["create a sprint", "link two issues"],
    "Figma": ["export a frame as PNG", "create a component"],
}
HOWTO = [
    "How do I {a} in {t}?",
    "What's the way to {a} in {t}?",
    "In {t}, how can I {a}?",
    "Can you tell me how to {a} in {t}?",
    "What are the steps to {a} in {t}?",
]

COUNTRIES = ["France", "Japan", "Brazil", "Canada", "Kenya", "Norway", "Chile", "Egypt",
             "Vietnam", "Portugal", "Austria", "Australia", "Sweden", "Switzerland", "Peru",
             "Morocco", "Ireland", "Poland", "Greece", "Thailand"]  # fmt: skip
CAPITAL = [
    "What is the capital of {c}?",
    "Which city is the capital of {c}?",
    "Tell me the capital city of {c}.",
    "What's {c}'s capital?",
    "Name the capital of {c}.",
]
ILLNESSES = ["the flu", "diabetes", "migraine", "asthma", "anemia", "Lyme disease",
             "chickenpox", "bronchitis", "gout", "tonsillitis"]  # fmt: skip
SYMPTOMS = [
    "What are the symptoms of {i}?",
    "What symptoms does {i} cause?",
    "How do I know if I have {i}? What are the signs?",
    "What are the common signs of {i}?",
]
CONCEPTS = ["recursion", "photosynthesis", "inflation", "blockchain", "machine learning",
            "compound interest", "the greenhouse effect", "supply and demand", "DNS",
            "public key cryptography", "a hash table", "natural selection"]  # fmt: skip
EXPLAIN = [
    "Explain {x} in simple terms.",
    "Can you explain {x} simply?",
    "What is {x}? Explain it like I'm new to it.",
    "Give me a simple explanation of {x}.",
    "Help me understand {x} in plain words.",
]
BOOKS = ["Pride and Prejudice", "War and Peace", "Moby Dick", "The Great Gatsby",
         "Don Quixote", "One Hundred Years of Solitude", "The Trial", "Middlemarch",
         "Beloved", "The Odyssey"]  # fmt: skip
AUTHOR = [
    "Who wrote {b}?",
    "Who is the author of {b}?",
    "Which writer wrote {b}?",
    "Who's the author of the book {b}?",
]
ACCOUNTS = ["Gmail", "Netflix", "Amazon", "Apple ID", "Microsoft", "Instagram", "Dropbox",
            "PayPal"]  # fmt: skip
RESET = [
    "How do I reset my {s} password?",
    "I forgot my {s} password, how can I reset it?",
    "What's the way to change a forgotten {s} password?",
    "Steps to recover my {s} password?",
]
DISHES = ["pancakes", "guacamole", "risotto", "banana bread", "tomato soup", "hummus",
          "fried rice", "lasagna", "apple pie", "pad thai"]  # fmt: skip
RECIPE = [
    "Give me a recipe for {d}.",
    "How do I make {d}?",
    "What's a good recipe for {d}?",
    "How can I cook {d} at home?",
]
ACRONYMS = ["NASA", "HTTP", "GDPR", "UNESCO", "SQL", "GPU", "ETF", "HTML", "RAM", "CEO"]
ACRONYM = [
    "What does {k} stand for?",
    "What is {k} short for?",
    "What's the full form of {k}?",
    "{k} is an abbreviation of what?",
]
LANGS = ["Python", "JavaScript", "Java", "Go", "Rust", "C#"]
TASKS = ["read a file line by line", "sort a list of dictionaries by a key",
         "make an HTTP request", "parse JSON", "get the current date",
         "reverse a string"]  # fmt: skip
CODE = [
    "How do I {task} in {lang}?",
    "In {lang}, how do you {task}?",
    "What's the best way to {task} in {lang}?",
    "Show me how to {task} using {lang}.",
]

UNITS = [("ounces", "pounds"), ("centimeters", "inches"), ("grams", "kilograms"),
         ("minutes", "hours"), ("meters", "miles"), ("cups", "liters")]  # fmt: skip
SPELLED = {2: "two", 3: "three", 4: "four", 5: "five", 10: "ten", 20: "twenty"}
CONVERT = [
    "How many {small} are in {n} {big}?",
    "Convert {n} {big} to {small}.",
    "{n} {big} is how many {small}?",
    "What is {n} {big} in {small}?",
]


def _paraphrases(rng: random.Random) -> list[Pair]:
    found: list[Pair] = []

    def add(templates: list[str], count: int, **slots: str) -> None:
        chosen = rng.sample(range(len(templates)), k=min(count + 1, len(templates)))
        first = templates[chosen[0]].format(**slots)
        for other in chosen[1 : count + 1]:
            found.append(Pair(first, templates[other].format(**slots), "hit", "paraphrase"))

    for tool, actions in ACTIONS.items():
        for action in actions:
            add(HOWTO, 2, a=action, t=tool)
    for country in COUNTRIES:
        add(CAPITAL, 2, c=country)
    for illness in ILLNESSES:
        add(SYMPTOMS, 2, i=illness)
    for concept in CONCEPTS:
        add(EXPLAIN, 2, x=concept)
    for book in BOOKS:
        add(AUTHOR, 2, b=book)
    for account in ACCOUNTS:
        add(RESET, 2, s=account)
    for dish in DISHES:
        add(RECIPE, 2, d=dish)
    for acronym in ACRONYMS:
        add(ACRONYM, 2, k=acronym)
    for lang in LANGS:
        for task in rng.sample(TASKS, 4):
            add(CODE, 1, task=task, lang=lang)
    for small, big in UNITS:
        for n in rng.sample(sorted(SPELLED), 3):
            one, other = rng.sample(CONVERT, 2)
            # The same number as digits in one query and as a word in the other.
            found.append(Pair(one.format(small=small, big=big, n=n),
                              other.format(small=small, big=big, n=SPELLED[n]), "hit",
                              "paraphrase"))  # fmt: skip
    return found


# -- near-misses ------------------------------------------------------------------------

NEGATIONS = [
    ("Which foods should I eat with {i}?", "Which foods should I not eat with {i}?", ILLNESSES),
    ("Is it safe to exercise with {i}?", "Is it unsafe to exercise with {i}?", ILLNESSES),
    ("Why does my {d} turn on by itself?", "Why won't my {d} turn on?",
     ["laptop", "phone", "TV", "router", "printer", "dishwasher"]),
    ("Can I use {t} with an internet connection?", "Can I use {t} without an internet connection?",
     TOOLS),
    ("Which countries require a visa for {c} citizens?",
     "Which countries do not require a visa for {c} citizens?", COUNTRIES),
    ("Is {x} a good idea for beginners?", "Why is {x} not a good idea for beginners?",
     ["day trading", "learning Rust first", "a standing desk", "intermittent fasting",
      "running a marathon", "a mechanical keyboard"]),
    ("What happens if I pay my {s} bill on time?", "What happens if I never pay my {s} bill?",
     ["phone", "electricity", "credit card", "internet", "water"]),
    ("Should I refrigerate {d}?", "Should I avoid refrigerating {d}?",
     ["tomatoes", "bread", "honey", "potatoes", "butter", "eggs"]),
]  # fmt: skip
SWAPS = [
    ("Is {a} bigger than {b}?", "Is {b} bigger than {a}?"),
    ("Convert 100 {a} to {b}.", "Convert 100 {b} to {a}."),
    ("How do I get from {a} to {b} by train?", "How do I get from {b} to {a} by train?"),
    ("Translate this sentence from {a} to {b}.", "Translate this sentence from {b} to {a}."),
    ("Why did {a} declare war on {b}?", "Why did {b} declare war on {a}?"),
    ("How do I migrate from {a} to {b}?", "How do I migrate from {b} to {a}?"),
]
SWAP_FILLS = [
    [("Canada", "Brazil"), ("Norway", "Sweden"), ("Texas", "Alaska"), ("Chile", "Peru")],
    [("USD", "EUR"), ("GBP", "JPY"), ("CHF", "CAD"), ("AUD", "NZD")],
    [("Paris", "Lyon"), ("Milan", "Rome"), ("Berlin", "Munich"), ("Madrid", "Seville")],
    [("English", "German"), ("French", "Italian"), ("Spanish", "Portuguese"),
     ("Dutch", "Swedish")],
    [("Germany", "France"), ("England", "Spain"), ("Japan", "Russia"), ("Prussia", "Austria")],
    [("MySQL", "PostgreSQL"), ("Jenkins", "GitHub Actions"), ("Angular", "React"),
     ("Heroku", "AWS")],
]  # fmt: skip
OTHER_ENTITY = [
    ("What is the capital of {a}?", COUNTRIES),
    ("What are the symptoms of {a}?", ILLNESSES),
    ("Who wrote {a}?", BOOKS),
    ("How do I reset my {a} password?", ACCOUNTS),
    ("Give me a recipe for {a}.", DISHES),
    ("What does {a} stand for?", ACRONYMS),
    ("What is the population of {a}?", COUNTRIES),
    ("sort a list by {a} in python", ["date", "name", "price", "length", "size"]),
]
NUMBERS = [
    ("What is {n}% of {m}?", lambda r: (r.choice([5, 10, 15, 20, 25]), r.randrange(40, 900))),
    ("Convert {n} miles to kilometers.", lambda r: (r.randrange(2, 500), 0)),
    ("Is {n} a prime number?", lambda r: (r.choice([17, 19, 23, 29, 31, 37, 41, 43]), 0)),
    ("How many days are in {n} weeks?", lambda r: (r.randrange(2, 30), 0)),
    ("What is the square root of {n}?", lambda r: (r.randrange(10, 1000), 0)),
    ("Set a timer for {n} minutes.", lambda r: (r.randrange(2, 90), 0)),
    ("What was the world population in {n}?", lambda r: (r.randrange(1900, 2020), 0)),
    ("Write a {n}-word summary of {m} sentences.", lambda r: (r.choice([50, 100, 200]),
                                                             r.randrange(2, 9))),
]  # fmt: skip
REVERSED = [
    ("How do I convert a string to an integer in {l}?",
     "How do I convert an integer to a string in {l}?"),
    ("How do I encode a string to base64 in {l}?", "How do I decode a base64 string in {l}?"),
    ("How do I enable dark mode in {t}?", "How do I disable dark mode in {t}?"),
    ("What are the advantages of {x}?", "What are the disadvantages of {x}?"),
    ("How do I upload files to {s}?", "How do I download files from {s}?"),
    ("How can I increase the font size in {t}?", "How can I decrease the font size in {t}?"),
    ("How do I convert Celsius to Fahrenheit?", "How do I convert Fahrenheit to Celsius?"),
    ("What should I do before a job interview?", "What should I do after a job interview?"),
    ("How do I hire a contractor?", "How do I fire a contractor?"),
    ("What time does the train from {a} arrive?", "What time does the train from {a} leave?"),
    ("How do I add a user to a group in {o}?", "How do I remove a user from a group in {o}?"),
    ("How do I lock the screen on {o}?", "How do I unlock the screen on {o}?"),
    ("How do I subscribe to a channel on {o}?", "How do I unsubscribe from a channel on {o}?"),
    ("How do I mute notifications on {o}?", "How do I unmute notifications on {o}?"),
    ("How do I zoom in on {o}?", "How do I zoom out on {o}?"),
    ("How do I follow a page on {o}?", "How do I unfollow a page on {o}?"),
]  # fmt: skip


def _near_misses(rng: random.Random) -> list[Pair]:
    found: list[Pair] = []
    for positive, negative, fills in NEGATIONS:
        for fill in rng.sample(fills, min(len(fills), 10)):
            slots = {"i": fill, "d": fill, "t": fill, "c": fill, "x": fill, "s": fill}
            found.append(Pair(positive.format(**slots), negative.format(**slots), "miss",
                              "negation"))  # fmt: skip
    for (one, other), fills in zip(SWAPS, SWAP_FILLS, strict=True):
        for a, b in fills:
            found.append(Pair(one.format(a=a, b=b), other.format(a=a, b=b), "miss", "swapped"))
            found.append(Pair(other.format(a=a, b=b), one.format(a=a, b=b), "miss", "swapped"))
    for template, names in OTHER_ENTITY:
        for _ in range(8):
            a, b = rng.sample(names, 2)
            found.append(Pair(template.format(a=a), template.format(a=b), "miss", "other_entity"))
    for template, draw in NUMBERS:
        for _ in range(9):
            n, m = draw(rng)
            n2, m2 = draw(rng)
            if (n, m) == (n2, m2):
                n2 = n + 3
            found.append(Pair(template.format(n=n, m=m), template.format(n=n2, m=m2), "miss",
                              "number"))  # fmt: skip
    systems = ["Windows", "macOS", "Ubuntu", "Android", "iPhone"]
    storage = ["S3", "Google Drive", "Dropbox", "OneDrive", "the server"]
    topics = ["remote work", "electric cars", "nuclear power", "microservices", "renting"]
    for one, other in REVERSED:
        for _ in range(5):
            slots = {"l": rng.choice(LANGS), "t": rng.choice(TOOLS), "x": rng.choice(topics),
                     "s": rng.choice(storage), "a": rng.choice(["Paris", "Boston", "Oslo"]),
                     "o": rng.choice(systems)}  # fmt: skip
            pair = Pair(one.format(**slots), other.format(**slots), "miss", "reversed")
            if pair not in found:
                found.append(pair)
    return found


def pairs() -> list[Pair]:
    rng = random.Random(SEED)
    return _paraphrases(rng) + _near_misses(rng)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--summary", action="store_true", help="Counts per kind only.")
    args = parser.parse_args()
    found = pairs()
    if args.summary:
        print(json.dumps({"pairs": len(found), "by_kind": Counter(p.kind for p in found)}))
        return
    print(json.dumps([p._asdict() for p in found], indent=1))


if __name__ == "__main__":
    main()
