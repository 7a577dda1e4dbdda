"""Console sessions in a signed cookie, and the CSRF checks every form POST passes.

A session is `base64(json).base64(hmac-sha256)`: the key id, an expiry and a random nonce,
signed with a key derived from Keel's secret key. Nothing is stored server-side; the key
itself is re-checked on every request, so revoking it ends the session at once.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import orjson
from starlette.requests import Request
from starlette.responses import Response

SESSION_COOKIE = "keel_session"
LOGIN_COOKIE = "keel_login"  # carries the nonce of the login form's CSRF token
COOKIE_PATH = "/ui"
SESSION_SECONDS = 8 * 3600
LOGIN_SECONDS = 3600
CSRF_FIELD = "csrf_token"


@dataclass(frozen=True, slots=True)
class Session:
    kind: str  # "session" or "login"
    nonce: str
    expires: int
    key_id: str = ""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionSigner:
    """Signs and reads session cookies, and derives each session's CSRF token."""

    def __init__(self, key: bytes, clock: Callable[[], float] = time.time):
        self._key = key
        self._clock = clock

    def _mac(self, purpose: bytes, data: bytes) -> bytes:
        return hmac.new(self._key, purpose + b"\x00" + data, hashlib.sha256).digest()

    def issue(self, kind: str, key_id: str = "", seconds: int = SESSION_SECONDS) -> Session:
        expires = int(self._clock()) + seconds
        return Session(kind, secrets.token_urlsafe(18), expires, key_id)

    def encode(self, session: Session) -> str:
        payload = orjson.dumps(
            {"t": session.kind, "n": session.nonce, "e": session.expires, "k": session.key_id}
        )
        return f"{_b64(payload)}.{_b64(self._mac(b'cookie', payload))}"

    def decode(self, value: str | None, kind: str) -> Session | None:
        """The session in a cookie value, or None when it is missing, forged or expired."""
        if not value or len(value) > 1024:
            return None
        body, _, signature = value.partition(".")
        try:
            payload, mac = _unb64(body), _unb64(signature)
        except (binascii.Error, ValueError):
            return None
        if not hmac.compare_digest(mac, self._mac(b"cookie", payload)):
            return None
        try:
            data = orjson.loads(payload)
            session = Session(str(data["t"]), str(data["n"]), int(data["e"]), str(data["k"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None
        if session.kind != kind or session.expires <= self._clock():
            return None
        return session

    def csrf_token(self, session: Session) -> str:
        return _b64(self._mac(b"csrf", session.nonce.encode()))

    def csrf_ok(self, session: Session, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(self.csrf_token(session), str(token))


def set_cookie(request: Request, response: Response, name: str, value: str, seconds: int) -> None:
    """HttpOnly, SameSite=Strict, Path=/ui, and Secure when the request came over HTTPS."""
    response.set_cookie(
        name,
        value,
        max_age=seconds,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def clear_cookie(request: Request, response: Response, name: str) -> None:
    response.delete_cookie(
        name,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def same_origin(request: Request) -> bool:
    """False when Origin (or, without it, Referer) names another host than the request's.

    Browsers send Origin on every POST; when neither header is there (a non-browser
    client), the CSRF token alone decides.
    """
    host = request.headers.get("host", "")
    origin = request.headers.get("origin")
    if origin is not None:
        return origin != "null" and urlsplit(origin).netloc == host
    referer = request.headers.get("referer")
    if referer is not None:
        return urlsplit(referer).netloc == host
    return True
