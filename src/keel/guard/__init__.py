"""Guard scanners and policies: injection, PII, secrets and more, offline and measured.

Nothing heavy loads on import: models load when a scanner first needs them (or on
`Policy.warm_up()`).
"""

from keel.guard.anonymize import Anonymizer, Deanonymizer, StreamingRestorer, Vault
from keel.guard.base import Action, Decision, Finding, ScanContext, Scanner, Verdict
from keel.guard.policy import (
    BUILTIN_POLICIES,
    GuardResources,
    GuardResult,
    Policy,
    PolicyError,
    PolicySpec,
    RequestState,
    ScannerSpec,
)
from keel.guard.streaming import StreamingOutputGuard, StreamStep

__all__ = [
    "BUILTIN_POLICIES",
    "Action",
    "Anonymizer",
    "Deanonymizer",
    "Decision",
    "Finding",
    "GuardResources",
    "GuardResult",
    "Policy",
    "PolicyError",
    "PolicySpec",
    "RequestState",
    "ScanContext",
    "Scanner",
    "ScannerSpec",
    "StreamStep",
    "StreamingOutputGuard",
    "StreamingRestorer",
    "Vault",
    "Verdict",
]
