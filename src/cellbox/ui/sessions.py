"""Browser sessions of the web console: an API key exchanged for an opaque cookie.

Why server-side sessions (a random ID → key ID, project, role, CSRF token) rather than
a signed cookie holding the key: the browser must never hold the API key (a stolen
cookie is then worth one session, not a key), and a revoke must end the session at
once. The session keeps only the key's *ID*; every request re-reads that key's row
(``AuthStore.get_key``: one indexed SQLite read, ~50 µs) and drops the session if the
key was revoked or expired since, in this process or any other.

Sessions live in memory: a server restart logs everyone out, which is the safe
direction, and a second table is not worth it for one process.
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass

from ..auth.keys import Principal
from ..auth.store import AuthStore, now_ms

COOKIE = "cellbox_session"
IDLE_TIMEOUT = 12 * 3600.0  # seconds without a request before a session is forgotten
MAX_SESSIONS = 10_000  # a login flood must not grow memory without bound


@dataclass
class Session:
    sid: str
    principal: Principal
    csrf: str
    last_seen: float

    def csrf_ok(self, token: str | None) -> bool:
        """Constant-time compare, so timing does not leak the token's prefix."""
        return token is not None and hmac.compare_digest(token.encode(), self.csrf.encode())


class Sessions:
    def __init__(self, store: AuthStore) -> None:
        self.store = store
        self._by_id: dict[str, Session] = {}

    def open(self, principal: Principal) -> Session:
        if len(self._by_id) >= MAX_SESSIONS:
            self._sweep()
            if len(self._by_id) >= MAX_SESSIONS:  # still full: drop the oldest
                oldest = min(self._by_id.values(), key=lambda s: s.last_seen)
                self._by_id.pop(oldest.sid, None)
        session = Session(secrets.token_urlsafe(32), principal, secrets.token_urlsafe(32), time.monotonic())
        self._by_id[session.sid] = session
        return session

    def close(self, sid: str | None) -> None:
        if sid:
            self._by_id.pop(sid, None)

    def check(self, sid: str | None) -> Session | None:
        """The live session of a cookie value, or None (unknown, idle too long, or its
        key revoked or expired: then the session is ended here, for good)."""
        session = self._by_id.get(sid) if sid else None
        if session is None:
            return None
        now = time.monotonic()
        row = self.store.get_key(session.principal.key_id)
        expired = row is not None and row.expires_at is not None and row.expires_at <= now_ms()
        if row is None or row.revoked_at is not None or expired or now - session.last_seen > IDLE_TIMEOUT:
            self._by_id.pop(session.sid, None)
            return None
        session.last_seen = now
        return session

    def _sweep(self) -> None:
        cutoff = time.monotonic() - IDLE_TIMEOUT
        for sid in [s.sid for s in self._by_id.values() if s.last_seen < cutoff]:
            self._by_id.pop(sid, None)
