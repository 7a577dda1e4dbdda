"""Item tokens: what lets a Ray actor run one batch line through a Keel server as the
batch's owner, without holding the owner's key (Keel keeps only its hash).

A token is the key id and an HMAC over the job, item, key id and the exact payload, keyed
from Keel's secret key, so every replica sharing KEEL_SECRET_KEY can check it and none can
be made to run anything but that line.
"""

from __future__ import annotations

import hashlib
import hmac

PURPOSE = "keel-job-items"


class ItemSigner:
    def __init__(self, key: bytes):
        self._key = key

    def _mac(self, job_id: str, item_id: int, key_id: str, payload: bytes) -> str:
        message = b"\0".join((job_id.encode(), str(item_id).encode(), key_id.encode(), payload))
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def sign(self, job_id: str, item_id: int, key_id: str, payload: bytes) -> str:
        return f"{key_id}.{self._mac(job_id, item_id, key_id, payload)}"

    def verify(self, token: str, job_id: str, item_id: int, payload: bytes) -> str | None:
        """The key id the token was made for, or None when it does not match this line."""
        key_id, _, mac = token.rpartition(".")
        if not key_id or not mac:
            return None
        expected = self._mac(job_id, item_id, key_id, payload)
        return key_id if hmac.compare_digest(mac, expected) else None
