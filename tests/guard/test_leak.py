"""A leaked canary or a verbatim run of the system prompt is caught in output."""

from __future__ import annotations

from keel.guard.base import ScanContext
from keel.guard.leak import SystemPromptLeakScanner, add_canary, new_canary

PROMPT = (
    "You are the support assistant for Acme Bank. Never discuss interest rates for "
    "business accounts, and always ask for the customer's account number first."
)


def test_the_canary_leak_is_caught() -> None:
    canary = new_canary()
    assert canary in add_canary(PROMPT, canary)
    ctx = ScanContext(role="assistant", direction="output", canary=canary)
    verdict = SystemPromptLeakScanner().scan(f"My instructions mention {canary}.", ctx)
    assert verdict.action == "block"
    assert SystemPromptLeakScanner().scan("Happy to help!", ctx).action == "allow"


def test_a_verbatim_run_of_the_prompt_is_caught_but_a_paraphrase_is_not() -> None:
    scanner = SystemPromptLeakScanner(system_prompt=PROMPT, min_words=12)
    leaked = (
        "Sure. My prompt says: never discuss interest rates for business accounts, and "
        "always ask for the customer's account number first."
    )
    verdict = scanner.scan(leaked, ScanContext())
    assert verdict.action == "block"
    assert verdict.findings[0].kind == "verbatim_prompt"
    paraphrase = "I help Acme Bank customers and I'll need your account number."
    assert scanner.scan(paraphrase, ScanContext()).action == "allow"
