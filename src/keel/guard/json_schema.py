"""Output must be JSON that validates against a schema (JSON Schema, any draft)."""

from __future__ import annotations

import json
import re
from typing import Any

from keel.guard.base import Action, Finding, ScanContext, Stopwatch, Verdict

_FENCE = re.compile(r"^\s*```(?:json)?\s*\n(.*?)\n?```\s*$", re.DOTALL)


class JsonSchemaScanner:
    """Blocks (or flags) output that is not JSON or does not match `schema`.

    A single fenced ```json block is accepted as well as bare JSON. Findings name the
    failing path and rule, not the offending values (they may hold personal data).
    """

    name = "json_schema"

    def __init__(self, schema: dict[str, Any], action: Action = "block", max_errors: int = 5):
        import jsonschema  # type: ignore[import-untyped]

        validator_cls = jsonschema.validators.validator_for(schema)
        try:
            validator_cls.check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise ValueError(f"invalid JSON schema: {exc.message}") from exc
        self._validator = validator_cls(schema)
        self.action = action
        self.max_errors = max_errors

    def scan(self, text: str, context: ScanContext) -> Verdict:
        watch = Stopwatch()
        fenced = _FENCE.match(text)
        body = fenced.group(1) if fenced else text
        try:
            document = json.loads(body)
        except json.JSONDecodeError as exc:
            finding = Finding("invalid_json", exc.pos, len(text), detail=exc.msg)
            return Verdict(self.name, 1.0, self.action, [finding], latency_ms=watch.ms())
        findings = []
        for error in self._validator.iter_errors(document):
            path = "/" + "/".join(str(p) for p in error.absolute_path)
            findings.append(
                Finding("schema_violation", 0, len(text), detail=f"{path}: {error.validator}")
            )
            if len(findings) >= self.max_errors:
                break
        action: Action = self.action if findings else "allow"
        return Verdict(self.name, 1.0 if findings else 0.0, action, findings, None, watch.ms())
