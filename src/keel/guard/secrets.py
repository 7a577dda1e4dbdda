"""Credentials in text: provider API keys, tokens, private keys, passwords in URLs.

Known formats are matched by pattern; anything else that looks random enough (Shannon
entropy over a length floor, several character classes) is reported as a generic
high-entropy secret, except hex digests and UUIDs, which are identifiers, not secrets.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from keel.guard.base import Action, Finding, ScanContext, Stopwatch, Verdict, text_hash
from keel.guard.normalize import readable_base64
from keel.guard.prefilter import Condition, Literals, required_literals

SecretMode = Literal["block", "redact", "flag"]
_ACTIONS: dict[SecretMode, Action] = {"block": "block", "redact": "redact", "flag": "flag"}


@dataclass(frozen=True, slots=True)
class SecretRule:
    kind: str
    pattern: re.Pattern[str]
    group: int = 0  # which group holds the secret itself
    # Literals every match contains: a text without them skips the pattern.
    needs: Condition | None = field(default=None, compare=False)


def _rule(kind: str, pattern: str, group: int = 0, flags: int = 0) -> SecretRule:
    compiled = re.compile(pattern, flags)
    return SecretRule(kind, compiled, group, required_literals(compiled))


RULES: tuple[SecretRule, ...] = (
    _rule(
        "private_key",
        r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----[\s\S]*?"
        r"(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----|\Z)",
    ),
    _rule("anthropic_api_key", r"\bsk-ant-(?:api|admin)\d{2}-[A-Za-z0-9_-]{20,}"),
    _rule("anthropic_api_key", r"\bsk-ant-[A-Za-z0-9_-]{20,}"),
    _rule("openai_api_key", r"\bsk-(?!ant-)(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}"),
    _rule("keel_api_key", r"\bkeel_sk_[A-Za-z0-9]{1,32}_[A-Za-z0-9_-]{16,}"),
    _rule("aws_access_key_id", r"\b(?:AKIA|ASIA|ABIA|ACCA|AROA|AIDA)[A-Z0-9]{16}\b"),
    _rule(
        "aws_secret_access_key",
        r"(?i:aws_?secret_?(?:access_?)?key|secret_?access_?key)[\"']?\s*[:=]\s*[\"']?"
        r"([A-Za-z0-9/+=]{40})(?![A-Za-z0-9/+=])",
        group=1,
    ),
    _rule("github_token", r"\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{36,255}\b"),
    _rule("github_token", r"\bgithub_pat_[A-Za-z0-9_]{50,255}\b"),
    _rule("gitlab_token", r"\bglpat-[A-Za-z0-9_-]{20,}\b"),
    _rule("slack_token", r"\bxox[abposr]-(?:\d+-)?[A-Za-z0-9-]{10,}\b"),
    _rule(
        "slack_webhook",
        r"https://hooks\.slack\.com/(?:services|workflows)/[A-Za-z0-9]+/[A-Za-z0-9]+/[A-Za-z0-9]+",
    ),
    _rule("stripe_key", r"\b(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,}\b"),
    _rule("google_api_key", r"\bAIza[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])"),
    _rule("huggingface_token", r"\bhf_[A-Za-z0-9]{30,}\b"),
    _rule("sendgrid_key", r"\bSG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}\b"),
    _rule("twilio_key", r"\bSK[0-9a-fA-F]{32}\b"),
    _rule("jwt", r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
    _rule(
        "connection_string_password",
        r"\b[a-z][a-z0-9+.-]{1,24}://[^\s:/@\"'<>]{1,128}:([^\s@/\"'<>]{1,256})@[^\s/\"'<>]+",
        group=1,
    ),
    _rule(
        "password_assignment",
        r"(?i:\b(?:password|passwd|pwd|passphrase|secret|api[_-]?key|access[_-]?token|"
        r"auth[_-]?token|client[_-]?secret)\b)[\"']?\s*[:=]\s*[\"']([^\s\"']{8,})[\"']",
        group=1,
    ),
)

# Values that fill a password slot in examples and docs, not real secrets.
_PLACEHOLDERS = re.compile(
    r"^(?:\*+|x+|\.+|<[^>]*>|\$\{?[A-Za-z_][A-Za-z0-9_]*\}?|%\(?[A-Za-z_]+\)?s?|"
    r"\{\{?[^}]*\}\}?|(?i:password|changeme|secret|example|your[_-]?\w*|redacted|none|null))$"
)
_TOKEN = re.compile(r"[A-Za-z0-9+/=_-]{20,}")
_HEX = re.compile(r"^(?:[0-9a-f]+|[0-9A-F]+)$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def shannon_entropy(value: str) -> float:
    """Bits per character."""
    if not value:
        return 0.0
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in Counter(value).values())


def _looks_random(token: str, min_length: int, min_entropy: float) -> bool:
    if len(token) < min_length or _HEX.match(token) or _UUID.match(token):
        return False
    classes = sum(
        (
            any(c.islower() for c in token),
            any(c.isupper() for c in token),
            any(c.isdigit() for c in token),
        )
    )
    if classes < 3 or sum(c.isdigit() for c in token) < 2:
        return False  # words, CamelCase identifiers, paths
    if "/" in token and token.count("/") > 2:
        return False  # file paths and URLs
    if readable_base64(token) is not None:
        return False  # encoded text (the injection scanner reads it), not a key
    return shannon_entropy(token) >= min_entropy


@dataclass(frozen=True, slots=True)
class SecretMatch:
    kind: str
    start: int
    end: int
    value: str


def find_secrets(
    text: str, high_entropy: bool = True, min_length: int = 24, min_entropy: float = 4.2
) -> list[SecretMatch]:
    """Secrets in `text`, non-overlapping, known formats before high-entropy guesses."""
    found: list[SecretMatch] = []

    def free(start: int, end: int) -> bool:
        return all(end <= f.start or start >= f.end for f in found)

    literals = Literals(text)
    for rule in RULES:
        if not literals.allow(rule.needs):
            continue
        for m in rule.pattern.finditer(text):
            value = m.group(rule.group)
            start, end = m.start(rule.group), m.end(rule.group)
            if rule.group and _PLACEHOLDERS.match(value):
                continue
            if free(start, end):
                found.append(SecretMatch(rule.kind, start, end, value))
    if high_entropy:
        for m in _TOKEN.finditer(text):
            if free(m.start(), m.end()) and _looks_random(m.group(0), min_length, min_entropy):
                found.append(SecretMatch("high_entropy", m.start(), m.end(), m.group(0)))
    return sorted(found, key=lambda f: f.start)


class SecretsScanner:
    """Blocks (default), redacts (`<SECRET>`) or flags credentials."""

    name = "secrets"

    def __init__(
        self,
        mode: SecretMode = "block",
        high_entropy: bool = True,
        min_length: int = 24,
        min_entropy: float = 4.2,
        kinds: Sequence[str] | None = None,
    ) -> None:
        self.mode = mode
        self.high_entropy = high_entropy
        self.min_length = min_length
        self.min_entropy = min_entropy
        self.kinds = frozenset(kinds) if kinds else None

    def scan(self, text: str, context: ScanContext) -> Verdict:
        watch = Stopwatch()
        matches = find_secrets(text, self.high_entropy, self.min_length, self.min_entropy)
        if self.kinds is not None:
            matches = [m for m in matches if m.kind in self.kinds]
        findings = [
            Finding(
                kind=f"secret.{m.kind}",
                start=m.start,
                end=m.end,
                detail=m.kind,
                value_hash=text_hash(m.value),
                score=0.7 if m.kind == "high_entropy" else 1.0,
            )
            for m in matches
        ]
        action: Action = "allow"
        redacted: str | None = None
        if matches:
            action = _ACTIONS[self.mode]
            if self.mode == "redact":
                parts: list[str] = []
                at = 0
                for m in matches:
                    parts.extend((text[at : m.start], "<SECRET>"))
                    at = m.end
                parts.append(text[at:])
                redacted = "".join(parts)
        return Verdict(
            scanner=self.name,
            score=max((f.score for f in findings), default=0.0),
            action=action,
            findings=findings,
            redacted=redacted,
            latency_ms=watch.ms(),
        )
