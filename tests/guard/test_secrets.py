"""Credentials are found by format or by entropy; hashes and UUIDs are not secrets."""

from __future__ import annotations

import hashlib
import uuid

import pytest

from keel.guard.base import ScanContext
from keel.guard.secrets import SecretsScanner, find_secrets


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("key sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z0AbCdEf", "openai_api_key"),
        ("sk-ant-api03-" + "aB3dE6fG9hI2jK5lM8nO1pQ4rS7tU0vW3xY6zA9" * 2, "anthropic_api_key"),
        ("AKIAIOSFODNN7EXAMPLE", "aws_access_key_id"),
        ("ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789", "github_token"),
        ("xoxb-1234567890-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx", "slack_token"),
        ("sk_live_51H8abcdEFGHijklMNOPqrst", "stripe_key"),
        ("AIzaSyA1bC2dE3fG4hI5jK6lM7nO8pQ9rS0tU1v", "google_api_key"),
        ("Bearer keel_sk_3f9a2b_Zx8yW7vU6tS5rQ4pO3nM2lK1jI0h", "keel_api_key"),
        ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk\n", "private_key"),
        (
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9P",
            "jwt",
        ),
        ("postgres://admin:S3cr3tP4ss@db.internal:5432/app", "connection_string_password"),
        ("use this: Q7vX9kP2mL4nR8tW1yZ3bC6dF0gH5jK", "high_entropy"),
    ],
)
def test_known_formats_and_random_tokens_are_found(text: str, kind: str) -> None:
    assert [m.kind for m in find_secrets(text)] == [kind]


def test_identifiers_and_placeholders_are_not_secrets() -> None:
    text = (
        f"sha {hashlib.sha256(b'x').hexdigest()} uuid {uuid.uuid4()} "
        "path /usr/local/lib/python3.11/site-packages/x.py "
        "dsn postgres://app:${DB_PASSWORD}@db/app password='********'"
    )
    assert find_secrets(text) == []


def test_a_secret_in_output_is_blocked_and_can_be_redacted() -> None:
    answer = "Here is the key: ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789"
    ctx = ScanContext(role="assistant", direction="output")
    assert SecretsScanner().scan(answer, ctx).action == "block"
    redacted = SecretsScanner(mode="redact").scan(answer, ctx)
    assert redacted.redacted == "Here is the key: <SECRET>"
