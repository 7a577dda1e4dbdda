"""The streaming output guard never sends what it later blocks, and restores placeholders."""

from __future__ import annotations

from keel.guard.policy import GuardResources, Policy, RequestState

SECRET = "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789"


def run(
    policy: Policy, answer: str, size: int, state: RequestState | None = None
) -> tuple[str, bool]:
    guard = policy.stream(state)
    sent = ""
    for i in range(0, len(answer), size):
        step = guard.feed(answer[i : i + size])
        sent += step.text
        if step.blocked:
            return sent, True
    end = guard.finish()
    return sent + end.text, end.blocked


def test_a_secret_late_in_a_stream_stops_it_before_the_secret_is_sent(
    default_policy: Policy,
) -> None:
    answer = "Here is a long explanation of the setup. " * 10 + f"Use {SECRET} to log in."
    for size in (1, 4, 17, 64):
        sent, blocked = run(default_policy, answer, size)
        assert blocked
        assert SECRET[:8] not in sent
        assert answer.startswith(sent)


def test_a_clean_stream_arrives_whole_and_restored(default_policy: Policy) -> None:
    state = RequestState()
    default_policy.run_input([{"role": "user", "content": "mail ana@example.org"}], state)
    answer = "I will write to <EMAIL_1> today. " * 12
    for size in (1, 3, 10, 50):
        sent, blocked = run(default_policy, answer, size, state)
        assert not blocked
        assert sent == answer.replace("<EMAIL_1>", "ana@example.org")


def test_the_guard_holds_back_until_text_is_scanned(resources: GuardResources) -> None:
    policy = Policy.from_dict(
        {"name": "s", "stream_holdback": 40, "output": [{"type": "secrets"}]}, resources
    )
    guard = policy.stream()
    assert guard.feed("short answer").text == ""
    assert guard.held == len("short answer")
    assert guard.finish().text == "short answer"


def test_redaction_applies_to_streamed_text(resources: GuardResources) -> None:
    policy = Policy.from_dict(
        {"name": "r", "output": [{"type": "secrets", "action": "redact"}]}, resources
    )
    answer = "Config: " + "x " * 100 + f"token {SECRET} and more text " * 3
    sent, blocked = run(policy, answer, 7)
    assert not blocked
    assert SECRET not in sent
    assert sent.count("<SECRET>") == 3
