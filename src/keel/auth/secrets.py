"""Provider secrets (upstream API keys) encrypted at rest with Fernet (AES-128-CBC + HMAC).

The key comes from the secret_key setting or, by default, a generated <data_dir>/secret.key.
"""

from __future__ import annotations

import os
import tempfile
from base64 import urlsafe_b64encode
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from keel.store.files import private_dir

KEY_FILE = "secret.key"
PREFIX = "fernet:"

# A passphrase is stretched with scrypt rather than HKDF because people pick guessable
# ones. The salt is fixed so that every replica given the same passphrase derives the same
# key without sharing a file; scrypt's cost (~16 MiB, well under 0.1 s) is paid once at start.
_SCRYPT_SALT = b"keel provider secrets v1"
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1

_WRONG_KEY = (
    "cannot decrypt provider secret: KEEL_SECRET_KEY differs from the key it was encrypted "
    "with; set KEEL_SECRET_KEY (or restore {path}) to the key in use when the secret was "
    "stored, or store the secret again"
)


class SecretError(Exception):
    """A provider secret cannot be encrypted or decrypted; the message says how to fix it."""


def _as_fernet_key(value: str) -> bytes | None:
    """The value itself when it already is a Fernet key (urlsafe base64 of 32 bytes)."""
    try:
        Fernet(value)
    except ValueError:
        return None
    return value.encode()


def derive_key(passphrase: str) -> bytes:
    """A Fernet key from a passphrase, with scrypt (n=2**14, r=8, p=1, fixed salt)."""
    kdf = Scrypt(salt=_SCRYPT_SALT, length=32, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P)
    return urlsafe_b64encode(kdf.derive(passphrase.encode()))


def _read_key_file(path: Path) -> bytes:
    key = path.read_text().strip()
    if _as_fernet_key(key) is None:
        raise SecretError(
            f"{path} does not hold a Fernet key; restore it from a backup, or set "
            "KEEL_SECRET_KEY to the key the stored provider secrets were encrypted with"
        )
    return key.encode()


def _key_from_file(data_dir: Path) -> bytes:
    """Read <data_dir>/secret.key, creating it (mode 0600) on first use."""
    path = data_dir / KEY_FILE
    try:
        return _read_key_file(path)
    except FileNotFoundError:
        pass
    private_dir(data_dir)
    key = Fernet.generate_key()
    # Written whole to a private temporary file, then linked into place: link fails if the
    # file exists, so two processes starting together end up sharing one complete key.
    fd, temporary = tempfile.mkstemp(dir=data_dir, prefix=f".{KEY_FILE}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(key + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            return _read_key_file(path)
    finally:
        os.unlink(temporary)
    return key


class SecretBox:
    """Encrypts and decrypts provider secrets; stored values look like `fernet:<token>`."""

    def __init__(self, key: bytes, key_file: Path):
        self._fernet = Fernet(key)
        self._key = key
        self._key_file = key_file

    def derive(self, purpose: str) -> bytes:
        """A 32-byte key for one purpose (e.g. signing console sessions), derived with HKDF,
        so the secret key is never used directly for anything but provider secrets."""
        hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose.encode())
        return hkdf.derive(self._key)

    @classmethod
    def load(cls, data_dir: Path, secret_key: str | None) -> SecretBox:
        """The box for `secret_key` (a Fernet key or a passphrase), else <data_dir>/secret.key."""
        key_file = data_dir / KEY_FILE
        if secret_key is None:
            return cls(_key_from_file(data_dir), key_file)
        if not secret_key.strip():
            raise SecretError(
                "KEEL_SECRET_KEY is empty; set it to a Fernet key or a passphrase, or unset "
                f"it to use the generated {key_file}"
            )
        return cls(_as_fernet_key(secret_key) or derive_key(secret_key), key_file)

    def encrypt(self, plaintext: str) -> str:
        return PREFIX + self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, token: str) -> str:
        if not token.startswith(PREFIX):
            raise SecretError(
                f"stored provider secret does not start with {PREFIX!r}, so it was not "
                "encrypted by Keel; store the secret again"
            )
        try:
            return self._fernet.decrypt(token[len(PREFIX) :].encode()).decode()
        except InvalidToken as exc:
            raise SecretError(_WRONG_KEY.format(path=self._key_file)) from exc
