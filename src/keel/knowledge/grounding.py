"""Groundedness: is each sentence of an answer supported by the retrieved context?

`GroundednessScorer` is the pluggable interface (one method, `score`). The offline default,
`AlignmentScorer`, needs no download and works in two stages. First, word, number, negation
and direction checks against the context sentences sharing most of the answer sentence's
words feed a small logistic model; a sentence it is sure about (outside its `band`) is
decided there, at no model call. Only the others are aligned by the bundled MiniLM with the
SELECT context sentences (of all contexts together) that share most of their words, and a
second logistic model reads the alignment with the same checks. Both models are trained by
training/grounding/train.py (weights in knowledge/models/grounding.json). Embedding was
nearly all of the scorer's time (docs/knowledge.md). Every sentence of a long context is
read by the word checks and can be selected: nothing is truncated into a silent pass.
"""

from __future__ import annotations

import itertools
import json
import re
from collections import OrderedDict
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
# Context sentence vectors kept by a scorer: the passages a base returns recur across answers.
CACHE_SENTENCES = 4096

# The word checks: what both stages read, computed against an evidence window (the best
# sentence and its neighbours) and the whole context.
CHECKS = (
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
)
# The first stage: the checks alone, the window chosen by shared words.
WORD_FEATURES = CHECKS
# The second stage: MiniLM alignment with the checks, the window chosen by cosine.
FEATURES = (
    "cos_max",
    "cos_second",
    "cos_pair_max",
    "cos_context_mean",
    *CHECKS,
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


@dataclass(frozen=True)
class Context:
    """One retrieved passage, split and counted once for every answer sentence read against it."""

    text: str
    sentences: list[str]
    sentence_words: list[set[str]]
    words: frozenset[str]
    bigrams: frozenset[tuple[str, str]]
    numbers: frozenset[str]
    lower: str
    quantifiers: frozenset[str]

    @classmethod
    def of(cls, text: str, found: list[str] | None = None) -> Context:
        if found is None:
            found = [text[s:e] for s, e in sentences(text)]
        tokens = words(text)
        return cls(
            text=text,
            sentences=found,
            sentence_words=[set(words(s)) for s in found],
            words=frozenset(tokens),
            bigrams=frozenset(itertools.pairwise(tokens)),
            numbers=frozenset(_numbers(text)),
            lower=text.lower(),
            quantifiers=frozenset(q.lower() for q in _QUANTIFIER.findall(text)),
        )


def select(claim_words: set[str], sentence_words: list[set[str]], k: int) -> list[int]:
    """Positions (in order) of the `k` context sentences sharing the most words with the
    claim: the only ones embedded, since a sentence that shares none of the claim's words
    rarely supports it, and embedding every sentence of every passage is the scorer's cost."""
    if len(sentence_words) <= k:
        return list(range(len(sentence_words)))
    shared = [len(claim_words & found) for found in sentence_words]
    best = sorted(range(len(shared)), key=lambda i: (-shared[i], i))[:k]
    return sorted(best)


def checks(claim: str, best: int, context: Context) -> list[float]:
    """The values of CHECKS for `claim` against `context`, its evidence window around
    sentence `best`."""
    found = context.sentences
    window = " ".join(found[max(0, best - 1) : best + 2]) if found else ""
    claim_tokens = words(claim)
    claim_words = set(claim_tokens)
    cover_best = len(claim_words & set(words(window))) / max(1, len(claim_words))
    cover_context = len(claim_words & context.words) / max(1, len(claim_words))
    bigrams = set(itertools.pairwise(claim_tokens))
    bigram_cover = len(bigrams & context.bigrams) / max(1, len(bigrams))
    claim_numbers = _numbers(claim)
    numbers_missing = (
        len(claim_numbers - context.numbers) / len(claim_numbers) if claim_numbers else 0.0
    )
    entities = set(_ENTITY.findall(claim))
    entities_missing = (
        sum(1 for e in entities if e.lower() not in context.lower) / len(entities)
        if entities
        else 0.0
    )
    claim_negated = bool(_NEGATION.search(claim))
    window_negated = bool(_NEGATION.search(window))
    claim_direction, window_direction = _direction(claim), _direction(window)
    quantifiers = {q.lower() for q in _QUANTIFIER.findall(claim)}
    return [
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
        float(bool(quantifiers - context.quantifiers)),
        min(len(claim_tokens), 40) / 40,
    ]


def word_features(claim: str, context: Context) -> tuple[Floats, int]:
    """The first stage's features (WORD_FEATURES) and the position of the evidence sentence:
    the one holding the largest share of the claim's words."""
    claim_words = set(words(claim))
    shared = [len(claim_words & found) for found in context.sentence_words]
    best = max(range(len(shared)), key=lambda i: (shared[i], -i)) if shared else 0
    return np.asarray(checks(claim, best, context), dtype=np.float32), best


def alignment_features(
    claim: str,
    claim_vector: Floats,
    context: str | Context,
    context_sentences: list[str],
    sentence_vectors: Floats,
    positions: list[int] | None = None,
) -> Floats:
    """The features of FEATURES for one answer sentence against one context.

    `sentence_vectors` are those of the context sentences at `positions` (default: all)."""
    if positions is None:
        positions = list(range(len(context_sentences)))
    if isinstance(context, str):
        context = Context.of(context, context_sentences)
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
    found = checks(claim, best, context)
    values = dict(zip(CHECKS, found, strict=True))
    top = float(cos[order[0]])
    return np.asarray(
        [
            top,
            second,
            pair_max,
            float(cos.mean()),
            *found,
            top * values["negation_mismatch"],
            top * values["direction_conflict"],
            top * values["cover_best"],
        ],
        dtype=np.float32,
    )


@dataclass(frozen=True)
class LogisticModel:
    """Standardised features, then a logistic regression. Its intercept is shifted so that
    0.5 is the decision threshold chosen in training (both stages decide at 0.5)."""

    mean: Floats
    scale: Floats
    coef: Floats
    intercept: float

    def probability(self, features: Floats) -> Floats:
        z = ((features - self.mean) / self.scale) @ self.coef + self.intercept
        return np.asarray(1.0 / (1.0 + np.exp(-z)), dtype=np.float32)

    @classmethod
    def from_dict(cls, raw: dict[str, list[float] | float]) -> LogisticModel:
        return cls(
            mean=np.asarray(raw["mean"], dtype=np.float32),
            scale=np.asarray(raw["scale"], dtype=np.float32),
            coef=np.asarray(raw["coef"], dtype=np.float32),
            intercept=float(raw["intercept"]),  # type: ignore[arg-type]
        )


THRESHOLD = 0.5  # both stages' intercepts are shifted to decide here


@dataclass(frozen=True)
class GroundingModel:
    """The two stages: `words` decides a sentence when its probability is outside `band`;
    `full` (alignment and checks) decides the rest."""

    words: LogisticModel
    full: LogisticModel
    band: tuple[float, float]

    def decided(self, p: float) -> bool:
        return not self.band[0] < p < self.band[1]

    @classmethod
    def load(cls, path: Path = MODEL_FILE) -> GroundingModel:
        raw = json.loads(path.read_text())
        if (
            tuple(raw["full"]["features"]) != FEATURES
            or tuple(raw["words"]["features"]) != WORD_FEATURES
        ):
            raise ValueError(f"{path} was trained on other features; retrain it")
        low, high = raw["band"]
        return cls(
            words=LogisticModel.from_dict(raw["words"]),
            full=LogisticModel.from_dict(raw["full"]),
            band=(float(low), float(high)),
        )


@lru_cache(maxsize=1)
def default_model() -> GroundingModel:
    return GroundingModel.load()


class AlignmentScorer:
    """The offline default: word, number, negation and direction checks, and MiniLM alignment
    for the sentences the checks alone do not decide."""

    name = "alignment"

    def __init__(
        self,
        embedder: Embedder,
        model: GroundingModel | None = None,
        select: int = SELECT,
        cascade: bool = True,
    ):
        self.embedder = embedder
        self.model = model or default_model()
        self.select = select  # context sentences embedded per answer sentence
        self.cascade = cascade  # False: every sentence goes through the second stage
        self._vectors: OrderedDict[str, Floats] = OrderedDict()  # context sentence -> vector
        self.embedded = 0  # texts sent to the embedder (exported for tests and benches)

    async def score(self, answer: str, contexts: list[str]) -> Groundedness:
        spans = sentences(answer)
        if not spans:
            return Groundedness(score=1.0, grounded=True)
        claims = [answer[s:e] for s, e in spans]
        prepared = [Context.of(c) for c in contexts if c.strip()]
        probabilities, evidence = [], []
        undecided = []
        for position, claim in enumerate(claims):
            best_p, best_evidence = 0.0, ""
            for context in prepared:
                row, top = word_features(claim, context)
                p = float(self.model.words.probability(row[None, :])[0])
                if p > best_p or not best_evidence:
                    best_p = p
                    best_evidence = context.sentences[top] if context.sentences else ""
            probabilities.append(best_p)
            evidence.append(best_evidence)
            if prepared and (not self.cascade or not self.model.decided(best_p)):
                undecided.append(position)
        if undecided:
            aligned = await self._align([claims[i] for i in undecided], prepared)
            for position, (p, found) in zip(undecided, aligned, strict=True):
                probabilities[position], evidence[position] = p, found
        verdicts = [
            SentenceVerdict(
                text=answer[start:end],
                start=start,
                end=end,
                score=round(p, 4),
                supported=p >= THRESHOLD,
                evidence=found,
            )
            for (start, end), p, found in zip(spans, probabilities, evidence, strict=True)
        ]
        weakest = min(v.score for v in verdicts)
        return Groundedness(
            score=weakest, grounded=all(v.supported for v in verdicts), sentences=verdicts
        )

    async def _align(self, claims: list[str], contexts: list[Context]) -> list[tuple[float, str]]:
        """The second stage for `claims`: (probability, evidence sentence) of each, its best
        context counting."""
        # The SELECT best sentences of all contexts together: five passages cost no more
        # to check than one, and a passage sharing no words with the claim is not embedded.
        flat = [(index, position) for index, context in enumerate(contexts)
                for position in range(len(context.sentences))]  # fmt: skip
        flat_words = [contexts[index].sentence_words[position] for index, position in flat]
        chosen: list[list[list[int]]] = []
        wanted: set[str] = set()
        for claim in claims:
            per_context: list[list[int]] = [[] for _ in contexts]
            for picked in select(set(words(claim)), flat_words, self.select):
                index, position = flat[picked]
                per_context[index].append(position)
                wanted.add(contexts[index].sentences[position])
            chosen.append(per_context)
        claim_vectors, vectors = await self._embed(claims, sorted(wanted))
        out = []
        for claim, vector, per_context in zip(claims, claim_vectors, chosen, strict=True):
            best_p, best_evidence = 0.0, ""
            for context, positions in zip(contexts, per_context, strict=True):
                if not positions:
                    continue
                selected = np.stack([vectors[context.sentences[p]] for p in positions])
                row = alignment_features(
                    claim, vector, context, context.sentences, selected, positions
                )
                p = float(self.model.full.probability(row[None, :])[0])
                if p > best_p or not best_evidence:
                    top = positions[int(np.argmax(selected @ vector))]
                    best_p, best_evidence = p, context.sentences[top]
            out.append((best_p, best_evidence))
        return out

    async def _embed(
        self, claims: list[str], context_sentences: list[str]
    ) -> tuple[Floats, dict[str, Floats]]:
        """The claims' vectors, and each context sentence's (from the cache when seen)."""
        known = {s: self._vectors[s] for s in context_sentences if s in self._vectors}
        missing = [s for s in context_sentences if s not in known]
        texts = claims + missing
        self.embedded += len(texts)
        # Alignment vectors are never stored: the embedder's faster approximate path (within
        # cosine 0.999 of the exact one, where it has one) is good enough for them.
        embed = getattr(self.embedder, "embed_approximate", None) or self.embedder.embed
        result = np.asarray((await embed(texts)).vectors, dtype=np.float32)
        for sentence, vector in zip(missing, result[len(claims) :], strict=True):
            known[sentence] = vector
            self._vectors[sentence] = vector
        for sentence in known:
            self._vectors.move_to_end(sentence)
        while len(self._vectors) > CACHE_SENTENCES:
            self._vectors.popitem(last=False)
        return result[: len(claims)], known
