from types import SimpleNamespace

import numpy as np
import pytest

from keel.embeddings.base import EmbeddingResult
from keel.knowledge.grounding import (
    FEATURES,
    SELECT,
    AlignmentScorer,
    alignment_features,
    sentences,
)


def test_sentences_do_not_split_at_abbreviations_or_decimals() -> None:
    text = "Aspirin lowers fever, e.g. in adults. The effect was 1.5 times larger (p < 0.05). Done"
    found = [text[s:e] for s, e in sentences(text)]
    assert found == [
        "Aspirin lowers fever, e.g. in adults.",
        "The effect was 1.5 times larger (p < 0.05).",
        "Done",
    ]


def _features(claim: str, context: str) -> dict[str, float]:
    found = [context[s:e] for s, e in sentences(context)]
    vectors = np.eye(len(found), 4, dtype=np.float32)
    row = alignment_features(claim, vectors[0], context, found, vectors)
    return dict(zip(FEATURES, row.tolist(), strict=True))


def test_a_claim_that_negates_its_evidence_is_flagged() -> None:
    context = "Metformin reduces the risk of diabetes. Patients were followed for 5 years."
    assert _features("Metformin reduces the risk of diabetes.", context)["negation_mismatch"] == 0
    assert (
        _features("Metformin does not reduce the risk of diabetes.", context)["negation_mismatch"]
        == 1
    )


def test_opposite_directions_and_missing_numbers_are_flagged() -> None:
    context = "Exercise decreased blood pressure by 12 percent."
    flipped = _features("Exercise increases blood pressure by 12 percent.", context)
    assert flipped["direction_conflict"] == 1
    assert flipped["numbers_missing"] == 0
    assert (
        _features("Exercise decreased blood pressure by 30 percent.", context)["numbers_missing"]
        == 1
    )


@pytest.fixture
def scorer(minilm):  # type: ignore[no-untyped-def]
    return AlignmentScorer(minilm)


async def test_supported_and_unsupported_sentences_of_an_answer(scorer: AlignmentScorer) -> None:
    context = (
        "The cafeteria opens at 8 am and closes at 3 pm. Lunch is served from noon. "
        "Employees get a 20 percent discount on all meals."
    )
    answer = (
        "The cafeteria opens at 8 am. Employees get a 20 percent discount on meals. "
        "Parking in the company garage is free for all visitors on weekends."
    )
    result = await scorer.score(answer, [context])
    verdicts = {v.text: v for v in result.sentences}
    assert verdicts["The cafeteria opens at 8 am."].supported
    assert not verdicts[
        "Parking in the company garage is free for all visitors on weekends."
    ].supported
    assert not result.grounded
    assert result.score == min(v.score for v in result.sentences)
    assert [v.text for v in result.unsupported] == [
        "Parking in the company garage is free for all visitors on weekends."
    ]


def _counting(scorer: AlignmentScorer) -> list[int]:
    asked: list[int] = []
    embed = scorer.embedder.embed

    async def counted(texts: list[str]) -> EmbeddingResult:
        asked.append(len(texts))
        return await embed(texts)

    scorer.embedder = SimpleNamespace(embed=counted)  # type: ignore[assignment]
    return asked


async def test_a_long_context_is_read_to_its_end(scorer: AlignmentScorer) -> None:
    filler = " ".join(f"Section {i} describes the weather on day {i}." for i in range(300))
    context = filler + " The vault code is changed every Monday at noon by the security team."
    claim = "The security team changes the vault code every Monday."
    asked = _counting(scorer)
    result = await scorer.score(claim, [context])
    assert result.sentences[0].evidence.startswith("The vault code is changed every Monday")
    assert result.grounded
    # The word checks are sure of this one: MiniLM is not asked at all.
    assert asked == []
    aligned = AlignmentScorer(scorer.embedder, cascade=False)
    asked_aligned = _counting(aligned)
    result = await aligned.score(claim, [context])
    assert result.sentences[0].evidence.startswith("The vault code is changed every Monday")
    # Only the sentences sharing most words with the claim are embedded, not all 301.
    assert asked_aligned == [1 + SELECT]


async def test_context_sentences_are_embedded_once_across_answers(minilm) -> None:  # type: ignore[no-untyped-def]
    scorer = AlignmentScorer(minilm, cascade=False)
    asked = _counting(scorer)
    context = "Aspirin lowers fever in adults. It also thins the blood. Take it with water."
    await scorer.score("Aspirin lowers fever.", [context])
    await scorer.score("Aspirin reduces fever in grown-ups.", [context])
    # The second answer's claim is new; the passage's sentences come from the first.
    assert asked == [1 + 3, 1]
