"""Output must be JSON matching the schema."""

from __future__ import annotations

import pytest

from keel.guard.base import ScanContext
from keel.guard.json_schema import JsonSchemaScanner

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
    "required": ["name"],
}
CTX = ScanContext(role="assistant", direction="output")


def test_valid_json_passes_bare_or_fenced() -> None:
    scanner = JsonSchemaScanner(SCHEMA)
    assert scanner.scan('{"name": "Ana", "age": 3}', CTX).action == "allow"
    assert scanner.scan('```json\n{"name": "Ana"}\n```', CTX).action == "allow"


def test_invalid_or_non_json_output_is_blocked_with_the_failing_path() -> None:
    scanner = JsonSchemaScanner(SCHEMA)
    verdict = scanner.scan('{"age": -1}', CTX)
    assert verdict.action == "block"
    assert {f.detail for f in verdict.findings} == {"/: required", "/age: minimum"}
    assert scanner.scan("Sure, here it is: {name: Ana}", CTX).findings[0].kind == "invalid_json"


def test_a_broken_schema_is_refused() -> None:
    with pytest.raises(ValueError, match="invalid JSON schema"):
        JsonSchemaScanner({"type": "no-such-type"})
