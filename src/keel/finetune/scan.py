"""The guard's scanners over training data, before any compute: PII, secrets and planted
instructions, reported per kind with the lines they are on; PII optionally anonymised.

Poisoned training data teaches the model whatever it carries, so a secret or an injected
instruction is a finding the job reports (and `block` refuses), never silently trained on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from keel.finetune.data import Example
from keel.guard.anonymize import Vault
from keel.guard.base import ScanContext, Scanner, Verdict

PiiHandling = Literal["report", "anonymize", "block"]
LINES_SHOWN = 20  # per kind, so a report of a dirty file stays readable


@dataclass
class ScanReport:
    """Findings of one file: count and first lines per kind (`pii.email`, `secret.aws`, …)."""

    examples: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    lines: dict[str, list[int]] = field(default_factory=dict)
    anonymized: int = 0  # messages whose PII was replaced by placeholders

    def add(self, kind: str, line: int) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        shown = self.lines.setdefault(kind, [])
        if len(shown) < LINES_SHOWN and line not in shown:
            shown.append(line)

    def of(self, prefix: str) -> int:
        return sum(n for kind, n in self.counts.items() if kind.startswith(prefix))

    def as_dict(self) -> dict[str, Any]:
        return {
            "examples": self.examples,
            "pii": self.of("pii."),
            "secrets": self.of("secret."),
            "injections": self.of("injection"),
            "counts": dict(sorted(self.counts.items())),
            "lines": {k: v for k, v in sorted(self.lines.items())},
            "anonymized": self.anonymized,
        }

    def summary(self) -> str:
        parts = [
            f"{self.of(p)} {name}"
            for p, name in (
                ("pii.", "PII"),
                ("secret.", "secrets"),
                ("injection", "planted instructions"),
            )
        ]
        return f"scanned {self.examples} examples: " + ", ".join(parts)


def default_scanners() -> tuple[Scanner, Scanner, Scanner]:
    """(pii, secrets, injection) as the guard builds them; loaded here, not at import."""
    from keel.guard.injection import InjectionScanner
    from keel.guard.pii import PiiScanner
    from keel.guard.secrets import SecretsScanner

    return (
        PiiScanner(mode="anonymize"),
        SecretsScanner(mode="flag"),
        InjectionScanner(action="flag"),
    )


def _flagged(verdict: Verdict) -> bool:
    # The injection scanner reports its score as a finding even when it allows the text.
    return verdict.action != "allow"


def scan_examples(
    examples: Sequence[Example],
    scanners: tuple[Scanner, Scanner, Scanner],
    *,
    anonymize: bool,
    progress: Callable[[int], None] | None = None,
) -> tuple[list[Example], ScanReport]:
    """Every message scanned; returns the examples (PII replaced when `anonymize`) and the
    report. One vault per conversation: a name keeps its placeholder across its turns."""
    pii, secrets, injection = scanners
    report = ScanReport(examples=len(examples))
    out: list[Example] = []
    for index, example in enumerate(examples):
        vault = Vault()
        messages: list[dict[str, str]] = []
        for message in example.messages:
            text = message["content"]
            verdict = pii.scan(text, ScanContext(role="user", vault=vault))
            for finding in verdict.findings:
                report.add(finding.kind, example.number)
            if anonymize and verdict.redacted is not None:
                text = verdict.redacted
                report.anonymized += 1
            for finding in secrets.scan(text, ScanContext()).findings:
                report.add(finding.kind, example.number)
            # An instruction planted in a user turn or a system prompt is what poisons data;
            # the assistant's own answers are what is being taught and are not read as one.
            if message["role"] != "assistant":
                verdict = injection.scan(text, ScanContext(role="user"))
                if _flagged(verdict):
                    report.add("injection", example.number)
            messages.append({"role": message["role"], "content": text})
        out.append(Example(example.number, tuple(messages)))
        if progress is not None:
            progress(index + 1)
    return out, report
