"""Which parts of a user message quote content, and where fetched content is scanned as."""

from __future__ import annotations

import pytest

from keel.guard.untrusted import SOURCE_ROLES, quoted_spans

EMAIL = (
    "Hi Tom, the invoice for March is attached. Payment is due on Friday; let me know "
    "if the amount looks wrong."
)


def quoted(text: str) -> list[str]:
    return [text[s:e].strip() for s, e in quoted_spans(text)]


@pytest.mark.parametrize(
    "message",
    [
        f"Summarise this e-mail for me:\n\n{EMAIL}",
        f"Please translate the following into German: {EMAIL}",
        f'Proofread this:\n"""\n{EMAIL}\n"""',
        f"Write a reply to this:\n```\n{EMAIL}\n```",
        f"> {EMAIL}\n\nWhat tone does this have?",
        f"Here is what I received\n---\n{EMAIL}\n---\nThoughts?",
        f"Extract the dates.\nText: {EMAIL}",
    ],
)
def test_the_quoted_email_is_found_in_every_common_shape(message: str) -> None:
    assert any(EMAIL in part for part in quoted(message)), quoted(message)


@pytest.mark.parametrize(
    "message",
    [
        "What's the weather like in Paris tomorrow?",
        "Summarise: short",
        "Can you help me write a cover letter for a data analyst job at a bank in London?",
    ],
)
def test_a_plain_request_quotes_nothing(message: str) -> None:
    assert quoted_spans(message) == []


def test_fetched_content_is_scanned_as_a_document_or_tool_output() -> None:
    assert SOURCE_ROLES["retrieved"] == "document"
    assert SOURCE_ROLES["quoted"] == "document"
    assert SOURCE_ROLES["tool"] == SOURCE_ROLES["http"] == "tool"
    assert SOURCE_ROLES["user"] == "user"
