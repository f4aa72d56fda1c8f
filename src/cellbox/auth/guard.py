"""From an ``Authorization`` header to a ``Principal``, or a 401 saying why not.

Used by the lifecycle API's middleware and by the proxy's resolver alike, so both
doors apply one rule. A key's row is kept for at most ``ROW_TTL`` seconds per process:
the read costs ~45-90 µs on a loaded 2-core host (``bench/auth.py``), over the 0.2 ms
budget with HTTP around it, and 0.5 s keeps a revoke made by another process visible
within the 1 s the issue allows. A revoke through this process drops the row at once
(``forget``).

A token that matched its row is remembered for the same ``ROW_TTL``, keyed by a
128-bit BLAKE2b digest of the token (the process keeps no key in clear; BLAKE2b is
the fastest hash in ``hashlib`` for a short input): a repeat request skips the
parse, the row lookup and the SHA-256 compare. Expiry and revocation
are still checked on every request against the cached row, which is at most
``ROW_TTL`` old.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ..errors import CellboxError, Unauthorized
from . import keys
from .keys import Principal
from .store import AuthStore, KeyRow, now_ms

if TYPE_CHECKING:
    from .audit import Audit

# last_used_at is written at most this often per key and process: a write per request
# would double the cost of authentication for a value nobody needs to the millisecond.
TOUCH_EVERY_MS = 60_000
ROW_TTL = 0.5  # seconds a key's row is reused before it is read again


class Authenticator:
    def __init__(self, store: AuthStore, row_ttl: float = ROW_TTL, *, remember_tokens: bool = True) -> None:
        self.store = store
        self.row_ttl = row_ttl
        self.remember_tokens = remember_tokens  # False: the path before the token cache (bench/auth.py)
        self._touched: dict[str, int] = {}
        self._rows: dict[str, tuple[float, KeyRow | None]] = {}
        # digest of a full token -> (when verified, its row): see the module docstring.
        self._verified: dict[bytes, tuple[float, KeyRow]] = {}

    def forget(self, key_id: str) -> None:
        """Drop a cached row (this process just revoked the key)."""
        self._rows.pop(key_id, None)
        self._verified = {t: v for t, v in self._verified.items() if v[1].id != key_id}

    def _row(self, key_id: str) -> KeyRow | None:
        now = time.monotonic()
        cached = self._rows.get(key_id)
        if cached is not None and now - cached[0] < self.row_ttl:
            return cached[1]
        row = self.store.get_key(key_id)
        if len(self._rows) > 10_000:  # unknown IDs from a scanner must not grow it without bound
            self._rows.clear()
        self._rows[key_id] = (now, row)
        return row

    def authenticate(self, authorization: str | bytes | None) -> Principal:
        """The principal of a request's ``Authorization`` header value; raises 401."""
        token = keys.bearer(authorization)
        if token is not None and self.remember_tokens:
            tag = hashlib.blake2b(token.encode(), digest_size=16).digest()
            hit = self._verified.get(tag)
            if hit is not None and time.monotonic() - hit[0] < self.row_ttl:
                return self._admit(hit[1])
        if token is None:
            raise Unauthorized("missing API key: send 'Authorization: Bearer <key>' "
                               "(cellbox key create makes one; root on the server finds one in admin.key)")
        parsed = keys.parse(token)
        if parsed is None:
            raise Unauthorized("invalid API key: not a cellbox key (cbx_<id>_<secret>)")
        key_id, secret = parsed
        row = self._row(key_id)
        # The same message for unknown and wrong: a probe learns nothing about which IDs exist.
        if row is None or not keys.matches(secret, row.hash):
            raise Unauthorized("invalid API key")
        if self.remember_tokens:
            if len(self._verified) > 10_000:  # a flood of distinct valid keys: bounded all the same
                self._verified.clear()
            self._verified[tag] = (time.monotonic(), row)
        return self._admit(row)

    def _admit(self, row: KeyRow) -> Principal:
        """A key whose secret matched: refused if revoked or expired; last-used noted."""
        key_id = row.id
        now = now_ms()
        if row.revoked_at is not None:
            raise Unauthorized(f"API key {key_id} was revoked")
        if row.expires_at is not None and row.expires_at <= now:
            raise Unauthorized(f"API key {key_id} has expired")
        if now - self._touched.get(key_id, 0) >= TOUCH_EVERY_MS:
            self._touched[key_id] = now
            self.store.touch_key(key_id, now)
        return row.principal


def proxy_resolver(resolve: Callable[..., Awaitable[tuple[Any, ...]]], auth: Authenticator,
                   audit: Audit | None = None, agent_port: int = 9501) -> Callable[..., Awaitable[tuple[Any, ...]]]:
    """The proxy's resolver: authenticate, then let ``resolve(ref, port, principal, error)``
    decide (a request without a valid key may still reach an unauthenticated port).
    With ``audit``: a refused key and a state-changing call to the agent are recorded."""

    async def resolver(ref: str, port: int, authorization: bytes | None, method: bytes = b"GET",
                       target: bytes = b"/") -> tuple[Any, ...]:
        try:
            principal: Principal | None = auth.authenticate(authorization)
            error: Unauthorized | None = None
        except Unauthorized as exc:
            principal, error = None, exc
        try:
            found = await (resolve(ref, port, principal) if error is None else resolve(ref, port, None, error))
        except CellboxError as err:
            if audit is not None:
                if err.status == 401:
                    audit.failed_auth(authorization=authorization, method=method, target=target, status=401,
                                      client=None, via="proxy")
                else:
                    audit.proxy_call(principal=principal, method=method, target=target, sandbox=ref, port=port,
                                     agent_port=agent_port, status=err.status)
            raise
        if audit is not None:
            audit.proxy_call(principal=principal, method=method, target=target, sandbox=found[2], port=port,
                             agent_port=agent_port, status=200)
        return found

    return resolver
