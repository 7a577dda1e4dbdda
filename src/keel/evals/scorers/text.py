"""Scorers that compare text: exact, contains, regex, JSON validity, schema and equality,
numeric tolerance, ROUGE (rouge-score) and BLEU (sacrebleu). All offline and deterministic."""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

import jsonschema  # type: ignore[import-untyped]
from pydantic import BaseModel, ConfigDict, Field, field_validator

from keel.evals.scorers.base import Measured, Observation, Scorer

_NUMBER = re.compile(r"-?\d+(?:[.,]\d+)*(?:[eE][-+]?\d+)?")


class _Opts(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _expected_text(observation: Observation) -> str | None:
    expected = observation.expected
    if expected is None:
        return None
    return expected if isinstance(expected, str) else json.dumps(expected)


def _fold(text: str, case_sensitive: bool) -> str:
    text = " ".join(text.split())
    return text if case_sensitive else text.casefold()


class Exact(Scorer):
    kind = "exact"
    summary = "1 when the output equals the expected text (whitespace folded), else 0"

    class Options(_Opts):
        case_sensitive: bool = False

    async def measure(self, observation: Observation) -> Measured:
        expected = _expected_text(observation)
        if expected is None:
            return Measured(None, "the item has no expected output")
        sensitive = self.options.case_sensitive  # type: ignore[attr-defined]
        same = _fold(observation.output, sensitive) == _fold(expected, sensitive)
        return Measured(1.0 if same else 0.0)


class Contains(Scorer):
    kind = "contains"
    summary = "1 when the output contains `value` (default: the expected text), else 0"

    class Options(_Opts):
        value: str | None = None
        case_sensitive: bool = False

    async def measure(self, observation: Observation) -> Measured:
        options: Any = self.options
        needle = options.value if options.value is not None else _expected_text(observation)
        if not needle:
            return Measured(None, "no value to look for: set `value` or give items `expected`")
        found = _fold(needle, options.case_sensitive) in _fold(
            observation.output, options.case_sensitive
        )
        return Measured(1.0 if found else 0.0)


class Regex(Scorer):
    kind = "regex"
    summary = "1 when `pattern` matches somewhere in the output, else 0"

    class Options(_Opts):
        pattern: str
        ignore_case: bool = False

        @field_validator("pattern")
        @classmethod
        def _compiles(cls, value: str) -> str:
            try:
                re.compile(value)
            except re.error as error:
                raise ValueError(f"not a valid regular expression ({error})") from None
            return value

    async def measure(self, observation: Observation) -> Measured:
        options: Any = self.options
        flags = re.IGNORECASE if options.ignore_case else 0
        return Measured(1.0 if re.search(options.pattern, observation.output, flags) else 0.0)


def _json_of(text: str) -> Any:
    """The output's JSON, also when a model wrapped it in a ```json fence."""
    stripped = text.strip()
    if stripped.startswith("```"):
        stripped = stripped.strip("`").removeprefix("json").strip()
    return json.loads(stripped)


class JsonValid(Scorer):
    kind = "json"
    summary = "1 when the output parses as JSON, else 0"

    async def measure(self, observation: Observation) -> Measured:
        try:
            _json_of(observation.output)
        except ValueError as error:
            return Measured(0.0, f"not JSON: {error}")
        return Measured(1.0)


def json_equal(output: str, expected: str) -> bool:
    """The output is the expected JSON value (any key order and spacing, a ```json fence
    allowed); when the expected text is not JSON, the two texts with whitespace folded."""
    try:
        want = _json_of(expected)
    except ValueError:
        return _fold(output, True) == _fold(expected, True)
    try:
        return bool(_json_of(output) == want)
    except ValueError:
        return False


class JsonEqual(Scorer):
    kind = "json_equal"
    summary = (
        "1 when the output is the expected JSON value (key order and spacing ignored; "
        "text compared whitespace-folded when the expected is not JSON), else 0"
    )

    async def measure(self, observation: Observation) -> Measured:
        expected = _expected_text(observation)
        if expected is None:
            return Measured(None, "the item has no expected output")
        return Measured(1.0 if json_equal(observation.output, expected) else 0.0)


class JsonSchema(Scorer):
    kind = "json_schema"
    summary = "1 when the output is JSON valid under `schema`, else 0"

    class Options(_Opts):
        json_schema: dict[str, Any] = Field(alias="schema")

        @field_validator("json_schema")
        @classmethod
        def _valid(cls, value: dict[str, Any]) -> dict[str, Any]:
            try:
                jsonschema.Draft202012Validator.check_schema(value)
            except jsonschema.SchemaError as error:
                raise ValueError(f"not a valid JSON Schema ({error.message})") from None
            return value

    async def measure(self, observation: Observation) -> Measured:
        try:
            data = _json_of(observation.output)
        except ValueError as error:
            return Measured(0.0, f"not JSON: {error}")
        validator = jsonschema.Draft202012Validator(self.options.json_schema)  # type: ignore[attr-defined]
        problem = jsonschema.exceptions.best_match(validator.iter_errors(data))
        return Measured(0.0, problem.message) if problem is not None else Measured(1.0)


class Numeric(Scorer):
    kind = "numeric"
    summary = "1 when the output's first number is within `tolerance` of the expected one"

    class Options(_Opts):
        tolerance: float = Field(1e-6, ge=0)
        relative: bool = False

    async def measure(self, observation: Observation) -> Measured:
        options: Any = self.options
        try:
            expected = float(str(observation.expected).replace(",", ""))
        except ValueError:
            return Measured(None, "the item's expected output is not a number")
        match = _NUMBER.search(observation.output)
        if match is None:
            return Measured(0.0, "no number in the output")
        got = float(match.group(0).replace(",", ""))
        allowed = options.tolerance * (abs(expected) if options.relative else 1.0)
        return Measured(1.0 if abs(got - expected) <= allowed else 0.0, f"got {got}")


@lru_cache(maxsize=4)
def _rouge(variant: str) -> Any:
    from rouge_score import rouge_scorer  # type: ignore[import-untyped]

    return rouge_scorer.RougeScorer([variant], use_stemmer=True)


class Rouge(Scorer):
    kind = "rouge"
    summary = "ROUGE F1 (rouge-score, stemmed) between the output and the expected text"
    default_threshold = 0.5

    class Options(_Opts):
        variant: str = Field("rougeL", pattern=r"^(rouge1|rouge2|rougeL|rougeLsum)$")

    async def measure(self, observation: Observation) -> Measured:
        expected = _expected_text(observation)
        if expected is None:
            return Measured(None, "the item has no expected output")
        variant = self.options.variant  # type: ignore[attr-defined]
        score = _rouge(variant).score(expected, observation.output)[variant]
        return Measured(float(score.fmeasure))


class Bleu(Scorer):
    kind = "bleu"
    summary = "sentence BLEU (sacrebleu, smoothed) over 100, against the expected text"
    default_threshold = 0.3

    async def measure(self, observation: Observation) -> Measured:
        import sacrebleu

        expected = _expected_text(observation)
        if expected is None:
            return Measured(None, "the item has no expected output")
        score = sacrebleu.sentence_bleu(observation.output, [expected])
        return Measured(float(score.score) / 100.0)
