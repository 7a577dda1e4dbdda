"""Groundedness: is each sentence of an answer supported by the retrieved context?

`GroundednessScorer` is the pluggable interface (one method, `score`). The offline default,
`AlignmentScorer`, needs no download: each answer sentence is aligned by the bundled MiniLM
with the SELECT context sentences (of all contexts together) that share most of its words,
and the adjacent pairs among them; then a small logistic model (training/grounding/train.py,
weights in knowledge/models/grounding.json) reads the alignment together with word, number,
negation and direction checks against the best aligned span. Embedding every sentence of
every passage was nearly all of the scorer's time and bought almost no accuracy
(docs/knowledge.md). Every sentence of a long context is read by the word checks and can be
selected: nothing is truncated into a silent pass.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from keel.embeddings.base import Embedder
from keel.knowledge.index import words

if TYPE_CHECKING:
    import numpy.typing as npt

    Floats = npt.NDArray[np.float32]

MODEL_FILE = Path(__file__).parent / "models" / "grounding.json"


@dataclass(frozen=True)
class SentenceVerdict:
    text: str
    start: int  # offsets in the answer
    end: int
    score: float  # probability that the context supports it
    supported: bool
    evidence: str  # the context span it aligned with best


@dataclass(frozen=True)
class Groundedness:
    score: float  # the weakest sentence's score: one unsupported claim makes an answer unsafe
    grounded: bool
    sentences: list[SentenceVerdict] = field(default_factory=list)

    @property
    def unsupported(self) -> list[SentenceVerdict]:
        return [s for s in self.sentences if not s.supported]


class GroundednessScorer(Protocol):
    name: str

    async def score(self, answer: str, contexts: list[str]) -> Groundedness: ...


# A sentence ends at . ! ? followed by space and a capital/digit/bracket, not after common
# abbreviations or inside decimals ("e.g. the", "p < 0.05").
_SPLIT = re.compile(r"(?<=[.!?])[\"')\]]?\s+(?=[A-Z0-9(\[\"'])|\n\s*\n|\n(?=[-*•] )")
_ABBREVIATIONS = ("e.g.", "i.e.", "et al.", "vs.", "Fig.", "fig.", "approx.", "Dr.", "No.")


def sentences(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence of `text`."""
    spans: list[tuple[int, int]] = []
    start = 0
    for match in _SPLIT.finditer(text):
        piece = text[start : match.start()]
        if piece.rstrip().endswith(_ABBREVIATIONS):
            continue
        if piece.strip():
            lead = len(piece) - len(piece.lstrip())
            spans.append((start + lead, start + len(piece.rstrip())))
        start = match.end()
    piece = text[start:]
    if piece.strip():
        lead = len(piece) - len(piece.lstrip())
        spans.append((start + lead, start + len(piece.rstrip())))
    return spans


_NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:[.,]\d+)*%?")
_NEGATION = re.compile(
    r"\b(?:not|no|never|none|neither|nor|cannot|without|lack|lacks|lacking|absent|absence|"
    r"fail|fails|failed|unable|doesn't|don't|didn't|isn't|aren't|wasn't|weren't|won't|"
    r"unaffected|insignificant|non-significant|nonsignificant)\b",
    re.IGNORECASE,
)
_UP = re.compile(
    r"\b(?:increas\w*|rais\w*|higher|high|greater|more|elevat\w*|enhanc\w*|improv\w*|promot\w*|"
    r"induc\w*|activat\w*|upregulat\w*|up-regulat\w*|stimulat\w*|gain\w*|rise|rises|rose|"
    r"positive\w*|benefi\w*|accelerat\w*|exacerbat\w*|worsen\w*)\b",
    re.IGNORECASE,
)
_DOWN = re.compile(
    r"\b(?:decreas\w*|reduc\w*|lower\w*|low|less|fewer|diminish\w*|inhibit\w*|suppress\w*|"
    r"impair\w*|downregulat\w*|down-regulat\w*|attenuat\w*|declin\w*|loss|lose|loses|lost|"
    r"negative\w*|prevent\w*|block\w*|slow\w*|protect\w*|decline\w*)\b",
    re.IGNORECASE,
)
_QUANTIFIER = re.compile(
    r"\b(?:all|always|every|only|entirely|completely|exclusively|most|majority|minority|"
    r"rarely|sometimes|often|significantly|strongly|weakly)\b",
    re.IGNORECASE,
)
_ENTITY = re.compile(r"\b(?:[A-Z][A-Za-z0-9-]*[A-Z0-9][A-Za-z0-9-]*|[A-Za-z]+\d[A-Za-z0-9-]*)\b")

# Context sentences embedded per answer sentence (of all contexts), chosen by shared words
# (docs/knowledge.md: what fewer costs in quality and saves in time).
SELECT = 3

FEATURES = (
    "cos_max",
    "cos_second",
    "cos_pair_max",
    "cos_context_mean",
    "cover_best",
    "cover_context",
    "bigram_cover_context",
    "numbers_missing",
    "has_numbers",
    "entities_missing",
    "negation_mismatch",
    "claim_negated",
    "direction_conflict",
    "direction_agree",
    "quantifier_unmatched",
    "claim_length",
    # A close paraphrase that flips a negation or a direction is a contradiction, not support.
    "cos_x_negation_mismatch",
    "cos_x_direction_conflict",
    "cos_x_cover_best",
)


def _numbers(text: str) -> set[str]:
    return {n.rstrip("%").replace(",", "") for n in _NUMBER.findall(text)}


def _direction(text: str) -> int:
    up, down = len(_UP.findall(text)), len(_DOWN.findall(text))
    return (up > down) - (down > up)


def select(claim_words: set[str], sentence_words: list[set[str]], k: int) -> list[int]:
    """Positions (in order) of the `k` context sentences sharing the most words with the
    claim: the only ones embedded, since a sentence that shares none of the claim's words
    rarely supports it, and embedding every sentence of every passage is the scorer's cost."""
    if len(sentence_words) <= k:
        return list(range(len(sentence_words)))
    shared = [len(claim_words & found) for found in sentence_words]
    best = sorted(range(len(shared)), key=lambda i: (-shared[i], i))[:k]
    return sorted(best)


def alignment_features(
    claim: str,
    claim_vector: Floats,
    context: str,
    context_sentences: list[str],
    sentence_vectors: Floats,
    positions: list[int] | None = None,
) -> Floats:
    """The features of FEATURES for one answer sentence against one context.

    `sentence_vectors` are those of the context sentences at `positions` (default: all)."""
    if positions is None:
        positions = list(range(len(context_sentences)))
    cos = sentence_vectors @ claim_vector if len(positions) else np.zeros(1, np.float32)
    order = np.argsort(-cos)
    best = positions[int(order[0])] if positions else 0
    second = float(cos[order[1]]) if cos.shape[0] > 1 else float(cos[order[0]])
    # Two adjacent sentences read together: the normalised sum of their vectors stands in for
    # embedding the pair, at no extra model call.
    adjacent = [i for i in range(len(positions) - 1) if positions[i + 1] == positions[i] + 1]
    if adjacent:
        pairs = sentence_vectors[adjacent] + sentence_vectors[[i + 1 for i in adjacent]]
        pairs /= np.maximum(np.linalg.norm(pairs, axis=1, keepdims=True), 1e-6)
        pair_max = float((pairs @ claim_vector).max())
    else:
        pair_max = float(cos.max())
    # The evidence: the best sentence and its neighbours (claims often span two sentences).
    window = " ".join(context_sentences[max(0, best - 1) : best + 2]) if context_sentences else ""
    claim_words = set(words(claim))
    window_words = set(words(window))
    context_words = set(words(context))
    cover_best = len(claim_words & window_words) / max(1, len(claim_words))
    cover_context = len(claim_words & context_words) / max(1, len(claim_words))
    claim_tokens = words(claim)
    bigrams = set(itertools.pairwise(claim_tokens))
    context_tokens = words(context)
    context_bigrams = set(itertools.pairwise(context_tokens))
    bigram_cover = len(bigrams & context_bigrams) / max(1, len(bigrams))
    claim_numbers = _numbers(claim)
    numbers_missing = (
        len(claim_numbers - _numbers(context)) / len(claim_numbers) if claim_numbers else 0.0
    )
    entities = set(_ENTITY.findall(claim))
    entities_missing = (
        sum(1 for e in entities if e.lower() not in context.lower()) / len(entities)
        if entities
        else 0.0
    )
    claim_negated = bool(_NEGATION.search(claim))
    window_negated = bool(_NEGATION.search(window))
    claim_direction, window_direction = _direction(claim), _direction(window)
    quantifiers = {q.lower() for q in _QUANTIFIER.findall(claim)}
    quantifier_unmatched = bool(quantifiers - {q.lower() for q in _QUANTIFIER.findall(context)})
    return np.asarray(
        [
            float(cos[order[0]]),
            second,
            pair_max,
            float(cos.mean()),
            cover_best,
            cover_context,
            bigram_cover,
            numbers_missing,
            float(bool(claim_numbers)),
            entities_missing,
            float(claim_negated != window_negated),
            float(claim_negated),
            float(claim_direction * window_direction < 0),
            float(claim_direction * window_direction > 0),
            float(quantifier_unmatched),
            min(len(claim_tokens), 40) / 40,
            float(cos[order[0]]) * float(claim_negated != window_negated),
            float(cos[order[0]]) * float(claim_direction * window_direction < 0),
            float(cos[order[0]]) * cover_best,
        ],
        dtype=np.float32,
    )


@dataclass(frozen=True)
class LogisticModel:
    """Standardised features, then a logistic regression; `threshold` on its probability."""

    mean: Floats
    scale: Floats
    coef: Floats
    intercept: float
    threshold: float

    def probability(self, features: Floats) -> Floats:
        z = ((features - self.mean) / self.scale) @ self.coef + self.intercept
        return np.asarray(1.0 / (1.0 + np.exp(-z)), dtype=np.float32)

    @classmethod
    def load(cls, path: Path = MODEL_FILE) -> LogisticModel:
        raw = json.loads(path.read_text())
        if tuple(raw["features"]) != FEATURES:
            raise ValueError(f"{path} was trained on other features; retrain it")
        return cls(
            mean=np.asarray(raw["mean"], dtype=np.float32),
            scale=np.asarray(raw["scale"], dtype=np.float32),
            coef=np.asarray(raw["coef"], dtype=np.float32),
            intercept=float(raw["intercept"]),
            threshold=float(raw["threshold"]),
        )


@lru_cache(maxsize=1)
def default_model() -> LogisticModel:
    return LogisticModel.load()


class AlignmentScorer:
    """The offline default: MiniLM alignment plus word, number, negation and direction checks."""

    name = "alignment"

    def __init__(
        self, embedder: Embedder, model: LogisticModel | None = None, select: int = SELECT
    ):
        self.embedder = embedder
        self.model = model or default_model()
        self.select = select  # context sentences embedded per answer sentence

    async def features(
        self, answer: str, contexts: list[str]
    ) -> tuple[list[tuple[int, int]], np.ndarray, list[str]]:
        """Answer sentence spans, their feature rows (best context for each), and evidence."""
        spans = sentences(answer)
        claims = [answer[s:e] for s, e in spans]
        texts = [c for c in contexts if c.strip()]
        context_sentences = [[context[s:e] for s, e in sentences(context)] for context in texts]
        sentence_words = [[set(words(s)) for s in found] for found in context_sentences]
        # Per claim and context, the sentences worth embedding; each distinct one embedded once.
        chosen: list[list[list[int]]] = []
        wanted: dict[str, int] = {}
        # The SELECT best sentences of all contexts together: five passages cost no more
        # to check than one, and a passage sharing no words with the claim is not embedded.
        flat = [(index, position) for index, found in enumerate(sentence_words)
                for position in range(len(found))]  # fmt: skip
        flat_words = [sentence_words[index][position] for index, position in flat]
        for claim in claims:
            per_context: list[list[int]] = [[] for _ in texts]
            for picked in select(set(words(claim)), flat_words, self.select):
                index, position = flat[picked]
                per_context[index].append(position)
            chosen.append(per_context)
            for found, positions in zip(context_sentences, per_context, strict=True):
                for position in positions:
                    wanted.setdefault(found[position], len(claims) + len(wanted))
        vectors = await self._embed(claims + list(wanted))
        rows, evidence = [], []
        for claim, vector, per_context in zip(claims, vectors[: len(claims)], chosen, strict=True):
            best_row, best_p, best_evidence = None, -1.0, ""
            for index, found in enumerate(context_sentences):
                positions = per_context[index]
                if not positions:
                    continue
                selected = vectors[[wanted[found[position]] for position in positions]]
                row = alignment_features(claim, vector, texts[index], found, selected, positions)
                p = float(self.model.probability(row[None, :])[0])
                if p > best_p:
                    top = positions[int(np.argmax(selected @ vector))]
                    best_row, best_p, best_evidence = row, p, found[top]
            rows.append(best_row if best_row is not None else np.zeros(len(FEATURES), np.float32))
            evidence.append(best_evidence)
        matrix = np.stack(rows) if rows else np.zeros((0, len(FEATURES)), np.float32)
        return spans, matrix, evidence

    async def _embed(self, texts: list[str]) -> Floats:
        if not texts:
            return np.zeros((0, 1), np.float32)
        # Alignment vectors are never stored: the embedder's faster approximate path (within
        # cosine 0.999 of the exact one, where it has one) is good enough for them.
        embed = getattr(self.embedder, "embed_approximate", None) or self.embedder.embed
        result = await embed(texts)
        return np.asarray(result.vectors, dtype=np.float32)

    async def score(self, answer: str, contexts: list[str]) -> Groundedness:
        spans, matrix, evidence = await self.features(answer, contexts)
        if not spans:
            return Groundedness(score=1.0, grounded=True)
        probabilities = self.model.probability(matrix)
        verdicts = [
            SentenceVerdict(
                text=answer[start:end],
                start=start,
                end=end,
                score=round(float(p), 4),
                supported=bool(p >= self.model.threshold),
                evidence=found,
            )
            for (start, end), p, found in zip(spans, probabilities, evidence, strict=True)
        ]
        weakest = min(v.score for v in verdicts)
        return Groundedness(
            score=weakest, grounded=all(v.supported for v in verdicts), sentences=verdicts
        )
