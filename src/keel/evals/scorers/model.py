"""Scorers that use a model: embedding similarity (the bundled MiniLM), groundedness (the
knowledge module's alignment scorer) and LLM-as-judge through any route, whose answer is
decoded under a JSON Schema grammar so that even a small model's verdict always parses."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from keel.embeddings.base import Embedder
from keel.evals.scorers.base import Measured, Observation, Scorer
from keel.knowledge.grounding import AlignmentScorer

SCALES: dict[str, list[int]] = {"1-5": [1, 2, 3, 4, 5], "pass-fail": [0, 1]}

JUDGE_SYSTEM = (
    "You grade an assistant's answer against a rubric. Read the rubric, the question, the "
    "reference answer when there is one, and the answer. Reply only with JSON: "
    '{"score": N}.'
)


class _Opts(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _expected_text(observation: Observation) -> str | None:
    expected = observation.expected
    if expected is None:
        return None
    return expected if isinstance(expected, str) else json.dumps(expected)


def _embedder(scorer: Scorer) -> Embedder:
    embedder = scorer.deps.embedder()
    if embedder is None:
        raise ValueError(
            f"scorer '{scorer.metric}' needs the embedding model; start Keel with embeddings on"
        )
    return embedder


class EmbeddingSimilarity(Scorer):
    kind = "embedding"
    summary = "cosine similarity of output and expected text under the bundled MiniLM"
    low = -1.0
    default_threshold = 0.8

    def check(self) -> None:
        _embedder(self)

    async def measure(self, observation: Observation) -> Measured:
        expected = _expected_text(observation)
        if expected is None:
            return Measured(None, "the item has no expected output")
        vectors = (await _embedder(self).embed([observation.output or " ", expected])).vectors
        a, b = np.asarray(vectors[0], np.float64), np.asarray(vectors[1], np.float64)
        norm = float(np.linalg.norm(a) * np.linalg.norm(b)) or 1.0
        return Measured(float(np.dot(a, b) / norm))


class Groundedness(Scorer):
    kind = "groundedness"
    summary = "how well the item's context supports the output's weakest sentence (0..1)"
    default_threshold = 0.5

    def check(self) -> None:
        _embedder(self)

    async def measure(self, observation: Observation) -> Measured:
        if not observation.context:
            return Measured(None, "the item has no context to ground the output in")
        result = await AlignmentScorer(_embedder(self)).score(
            observation.output, observation.context
        )
        unsupported = [s.text for s in result.unsupported][:1]
        return Measured(result.score, f"unsupported: {unsupported[0]}" if unsupported else "")


def judge_schema(scale: str) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"score": {"type": "integer", "enum": SCALES[scale]}},
        "required": ["score"],
        "additionalProperties": False,
    }


def _question(observation: Observation) -> str:
    data = observation.input
    if "messages" in data:
        return "\n".join(
            f"{m.get('role')}: {m.get('content')}" for m in data["messages"] if m.get("content")
        )
    return json.dumps(data.get("variables", {}), ensure_ascii=False)


class Judge(Scorer):
    kind = "judge"
    summary = "a model grades the output by a rubric (1-5, or 0/1), scaled to 0..1"
    default_threshold = 0.5

    class Options(_Opts):
        route: str = Field(description="The model or route that judges")
        rubric: str = Field(min_length=1, max_length=4000)
        scale: str = Field("1-5", pattern=r"^(1-5|pass-fail)$")
        max_tokens: int = Field(16, ge=4, le=512)

    def check(self) -> None:
        route = self.options.route  # type: ignore[attr-defined]
        if route not in self.deps.routes:
            known = ", ".join(sorted(self.deps.routes)[:10]) or "none"
            raise LookupError(
                f"judge route '{route}' does not exist (known: {known}); name a model or "
                "route this key may call"
            )

    def request(self, observation: Observation) -> dict[str, Any]:
        options: Any = self.options
        lowest, highest = SCALES[options.scale][0], SCALES[options.scale][-1]
        parts = [f"Rubric: {options.rubric}", f"Question:\n{_question(observation)}"]
        expected = _expected_text(observation)
        if expected is not None:
            parts.append(f"Reference answer:\n{expected}")
        parts.append(f"Answer:\n{observation.output}")
        parts.append(f"Score from {lowest} (worst) to {highest} (best).")
        return {
            "model": options.route,
            "messages": [
                {"role": "system", "content": JUDGE_SYSTEM},
                {"role": "user", "content": "\n\n".join(parts)},
            ],
            "temperature": 0,
            "max_tokens": options.max_tokens,
            # llama.cpp's server turns the schema into a grammar: only valid JSON comes out.
            "response_format": {"type": "json_object", "schema": judge_schema(options.scale)},
        }

    async def measure(self, observation: Observation) -> Measured:
        if self.deps.chat is None:
            return Measured(None, "no gateway to call the judge through")
        options: Any = self.options
        content = await self.deps.chat(self.request(observation), {"scorer": self.metric})
        try:
            score = json.loads(content)["score"]
        except (ValueError, KeyError, TypeError):
            return Measured(None, f"parse failure: the judge answered {content[:200]!r}")
        allowed = SCALES[options.scale]
        if not isinstance(score, int) or score not in allowed:
            return Measured(None, f"parse failure: score {score!r} is not one of {allowed}")
        lowest, highest = allowed[0], allowed[-1]
        return Measured((score - lowest) / (highest - lowest), f"judge score {score}")
