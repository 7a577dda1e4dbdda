import itertools
from pathlib import Path

import pytest

from keel.deploy.bundled import minilm_dir
from keel.knowledge.chunk import Chunker, tokenizer_counter, whitespace_tokens
from keel.knowledge.parse import parse
from tests.knowledge.samples import MARKDOWN


@pytest.fixture(scope="module")
def minilm_tokens():  # type: ignore[no-untyped-def]
    return tokenizer_counter(Path(minilm_dir()) / "tokenizer.json")


def test_a_heading_starts_a_new_chunk_and_travels_with_it(minilm_tokens) -> None:  # type: ignore[no-untyped-def]
    [document] = parse("handbook.md", MARKDOWN)
    chunks = Chunker(minilm_tokens, max_tokens=200).chunk(document)
    paths = [chunk.heading_path for chunk in chunks]
    assert ("Handbook", "Holidays") in paths
    assert ("Handbook", "Expenses") in paths
    holidays = next(c for c in chunks if c.heading_path == ("Handbook", "Holidays"))
    assert "Expenses" not in holidays.text
    assert holidays.embedding_text().startswith("Handbook > Holidays\n")
    for chunk in chunks:  # offsets point at the chunk's text in the document
        assert document.text[chunk.start : chunk.end] == chunk.text


def test_chunks_stay_within_the_token_budget_and_overlap(minilm_tokens) -> None:  # type: ignore[no-untyped-def]
    sentences = [f"Sentence number {i} says something about topic {i % 7}." for i in range(200)]
    [document] = parse("long.txt", " ".join(sentences).encode())
    chunks = Chunker(minilm_tokens, max_tokens=64, overlap_tokens=16).chunk(document)
    assert len(chunks) > 10
    for chunk in chunks:
        assert minilm_tokens([chunk.text])[0] <= 64
    for previous, following in itertools.pairwise(chunks):
        assert following.start < previous.end  # shared sentences at each cut
    assert chunks[0].start == 0
    assert chunks[-1].end == len(document.text)


def test_a_run_on_line_without_sentence_ends_is_cut_at_words() -> None:
    [document] = parse("table.txt", (" ".join(["cell"] * 2000)).encode())
    chunks = Chunker(whitespace_tokens, max_tokens=100, overlap_tokens=0).chunk(document)
    assert len(chunks) >= 20
    assert all(whitespace_tokens([c.text])[0] <= 100 for c in chunks)
