"""The signed session cookie: forged, expired or mixed-up cookies are never accepted."""

from __future__ import annotations

from keel.ui.session import SessionSigner


def test_a_session_round_trips_and_carries_its_key_id() -> None:
    signer = SessionSigner(b"k" * 32)
    session = signer.issue("session", key_id="abc123")
    found = signer.decode(signer.encode(session), "session")
    assert found == session
    assert found is not None
    assert found.key_id == "abc123"


def test_a_changed_payload_or_another_servers_key_is_refused() -> None:
    signer, other = SessionSigner(b"k" * 32), SessionSigner(b"x" * 32)
    value = signer.encode(signer.issue("session", key_id="abc123"))
    body, _, mac = value.partition(".")
    forged = signer.encode(signer.issue("session", key_id="admin0")).partition(".")[0]
    assert signer.decode(f"{forged}.{mac}", "session") is None
    assert other.decode(value, "session") is None
    assert signer.decode(body, "session") is None
    assert signer.decode("garbage.!!", "session") is None
    assert signer.decode("", "session") is None


def test_an_expired_session_and_a_login_nonce_are_not_sessions() -> None:
    now = [1_000_000.0]
    signer = SessionSigner(b"k" * 32, clock=lambda: now[0])
    session = signer.encode(signer.issue("session", key_id="abc", seconds=60))
    login = signer.encode(signer.issue("login", seconds=60))
    assert signer.decode(login, "session") is None
    now[0] += 61
    assert signer.decode(session, "session") is None


def test_csrf_tokens_belong_to_one_session() -> None:
    signer = SessionSigner(b"k" * 32)
    one, two = signer.issue("session", key_id="a"), signer.issue("session", key_id="a")
    assert signer.csrf_ok(one, signer.csrf_token(one))
    assert not signer.csrf_ok(one, signer.csrf_token(two))
    assert not signer.csrf_ok(one, "")
    assert not signer.csrf_ok(one, None)
