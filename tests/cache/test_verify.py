from __future__ import annotations

import pytest

from keel.cache.verify import consistent


@pytest.mark.parametrize(
    ("cached", "query"),
    [
        ("What is the capital of France?", "Which city is France's capital?"),
        ("How do I undo my last commit in Git?", "In Git, how can I undo my last commit?"),
        ("How many ounces are in 2 pounds?", "Convert two pounds to ounces."),
        ("Who wrote War and Peace?", "Which writer wrote War and Peace?"),
        ("Explain recursion in simple terms.", "What is recursion? Explain it like I'm new."),
    ],
)
def test_paraphrases_pass(cached: str, query: str) -> None:
    assert consistent(query, cached)


@pytest.mark.parametrize(
    ("cached", "query"),
    [
        ("What is 15% of 200?", "What is 15% of 300?"),  # numbers
        ("Which foods should I eat with gout?", "Which foods should I not eat with gout?"),
        ("Why does my TV turn on?", "Why won't my TV turn on?"),
        ("What is the capital of Austria?", "What is the capital of Australia?"),  # entity
        ("Is Canada bigger than Brazil?", "Is Brazil bigger than Canada?"),  # swapped
        ("Why did Spain declare war on England?", "Why did England declare war on Spain?"),
        ("How do I convert a string to an integer?", "How do I convert an integer to a string?"),
        ("How do I enable dark mode?", "How do I disable dark mode?"),  # opposites
        ("How do I mute a channel?", "How do I unmute a channel?"),  # negating prefix
        ("Give me a recipe for hummus.", "Give me a recipe for lasagna."),  # one word swapped
    ],
)
def test_near_misses_are_rejected(cached: str, query: str) -> None:
    assert not consistent(query, cached)
    assert not consistent(cached, query)
