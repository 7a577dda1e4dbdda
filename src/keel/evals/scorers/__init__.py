"""Scorers by type, and building them from specs with errors that name the field."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from keel.errors import InvalidRequest
from keel.evals.scorers.base import Deps, Measured, Observation, Scorer, ScorerSpec
from keel.evals.scorers.bias import CounterfactualBias
from keel.evals.scorers.model import EmbeddingSimilarity, Groundedness, Judge
from keel.evals.scorers.ops import Cost, Latency, PiiLeak, SecretLeak, Toxicity
from keel.evals.scorers.text import (
    Bleu,
    Contains,
    Exact,
    JsonEqual,
    JsonSchema,
    JsonValid,
    Numeric,
    Regex,
    Rouge,
)

SCORERS: dict[str, type[Scorer]] = {
    cls.kind: cls
    for cls in (
        Exact, Contains, Regex, JsonValid, JsonEqual, JsonSchema, Numeric, EmbeddingSimilarity,
        Rouge, Bleu, Latency, Cost, Groundedness, PiiLeak, SecretLeak, Toxicity, Judge,
        CounterfactualBias,
    )
}  # fmt: skip

__all__ = ["SCORERS", "Deps", "Measured", "Observation", "Scorer", "ScorerSpec", "build_scorers"]


def _field_error(where: str, message: str) -> InvalidRequest:
    return InvalidRequest(f"{where}: {message}", param=where, code="invalid_scorer")


def build_scorers(
    specs: Sequence[dict[str, Any] | ScorerSpec], deps: Deps, *, check: bool = True
) -> list[Scorer]:
    """Scorers for `specs`; the first problem is a 400 naming `scorers[i].field`.
    `check`: also verify what each needs at run time (judge route, embedder, package)."""
    if not specs:
        raise _field_error("scorers", 'give at least one scorer, e.g. [{"type": "exact"}]')
    built: list[Scorer] = []
    names: set[str] = set()
    for index, raw in enumerate(specs):
        where = f"scorers[{index}]"
        try:
            spec = raw if isinstance(raw, ScorerSpec) else ScorerSpec.model_validate(raw)
        except ValidationError as error:
            first = error.errors()[0]
            field = ".".join(str(p) for p in first["loc"])
            raise _field_error(f"{where}.{field}", str(first["msg"])) from None
        cls = SCORERS.get(spec.type)
        if cls is None:
            raise _field_error(
                f"{where}.type",
                f"unknown scorer '{spec.type}' (known: {', '.join(sorted(SCORERS))})",
            )
        try:
            options = cls.Options.model_validate(spec.options)
        except ValidationError as error:
            first = error.errors()[0]
            field = ".".join(str(p) for p in first["loc"])
            message = str(first["msg"]).removeprefix("Value error, ")
            if first["type"] == "extra_forbidden":
                message = f"scorer '{spec.type}' has no option '{field}'"
            raise _field_error(f"{where}.{field}", message) from None
        if spec.metric in names:
            raise _field_error(f"{where}.name", f"two scorers are named '{spec.metric}'; "
                               "give each a distinct name")  # fmt: skip
        names.add(spec.metric)
        scorer = cls(spec, options, deps)
        if check and hasattr(scorer, "check"):
            try:
                scorer.check()
            except LookupError as error:
                raise InvalidRequest(
                    f"{where}.route: {error.args[0]}", param=f"{where}.route", code="invalid_scorer"
                ) from None
            except ValueError as error:
                raise _field_error(f"{where}.type", str(error)) from None
        built.append(scorer)
    return built


def catalog() -> list[dict[str, Any]]:
    """Every scorer type with its range, direction and default threshold (for the docs/API)."""
    return [
        {"type": kind, "summary": cls.summary, "range": [cls.low, cls.high],
         "direction": "higher" if cls.higher_is_better else "lower",
         "default_threshold": cls.default_threshold}
        for kind, cls in sorted(SCORERS.items())
    ]  # fmt: skip
