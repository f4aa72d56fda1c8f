"""API keys: ``cbx_<key id>_<secret>``, only the secret's SHA-256 kept, compared in constant time.

The prefix lets secret scanners (GitHub's, trufflehog) recognise a leaked key; the key
ID is public (it names the key in ``key ls``, the audit log and revocation) and lets a
request's key be found by primary key, so checking one costs one indexed read. The
secret is 256 bits from ``secrets``; a plain SHA-256 suffices at rest because the
secret is random (no dictionary to brute-force, so no slow KDF is needed).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

PREFIX = "cbx_"
ID_BYTES = 8  # 16 hex characters: unique enough for a key ID, short enough to read
SECRET_BYTES = 32  # 256 bits
_KEY_RE = re.compile(r"^cbx_([0-9a-f]{16})_([0-9a-f]{64})$")


class Role(str, enum.Enum):
    ADMIN = "admin"  # keys, quotas, the audit log and every project
    MEMBER = "member"  # sandboxes, snapshots, secrets of its own project


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request is from: the key it showed, that key's project and role."""

    key_id: str
    project: str
    role: Role

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    def may_use(self, project: str) -> bool:
        """Whether this principal may act on ``project``'s objects."""
        return self.is_admin or project == self.project


def new_key() -> tuple[str, str, str]:
    """A fresh key: ``(key_id, full key to show once, hash to store)``."""
    key_id = secrets.token_hex(ID_BYTES)
    secret = secrets.token_hex(SECRET_BYTES)
    return key_id, f"{PREFIX}{key_id}_{secret}", digest(secret)


def parse(key: str) -> tuple[str, str] | None:
    """``(key_id, secret)`` of a well-formed key, else None."""
    match = _KEY_RE.match(key)
    return (match.group(1), match.group(2)) if match else None


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def matches(secret: str, stored_hash: str) -> bool:
    """Constant-time comparison, so response timing does not leak the hash's prefix."""
    return hmac.compare_digest(digest(secret), stored_hash)


def bearer(header: str | bytes | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value, else None."""
    if header is None:
        return None
    if isinstance(header, bytes):
        header = header.decode("latin-1")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None
