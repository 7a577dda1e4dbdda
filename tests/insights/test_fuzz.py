"""No request to /api/insights, however malformed, gets a server error (schemathesis)."""

from __future__ import annotations

from typing import Any

from tests.server.test_fuzz import KEY, _fuzz
from tests.server.test_fuzz import api_schema as api_schema  # the served app's schema


def test_no_insights_request_produces_a_server_error(api_schema: Any) -> None:
    schema = api_schema.include(path_regex="^/api/insights")
    calls = _fuzz(schema, 40, {"Authorization": f"Bearer {KEY['value']}"}, public_ok=True)
    assert calls >= 5 * 10
