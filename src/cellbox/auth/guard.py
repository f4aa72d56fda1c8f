"""From an ``Authorization`` header to a ``Principal``, or a 401 saying why not.

Used by the lifecycle API's middleware and by the proxy's resolver alike, so both
doors apply one rule. Every check reads the key's row (see ``store``): no cache, so a
revoke or an expiry takes effect at the next request in every process.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from ..errors import Unauthorized
from . import keys
from .keys import Principal
from .store import AuthStore, now_ms

# last_used_at is written at most this often per key and process: a write per request
# would double the cost of authentication for a value nobody needs to the millisecond.
TOUCH_EVERY_MS = 60_000


class Authenticator:
    def __init__(self, store: AuthStore) -> None:
        self.store = store
        self._touched: dict[str, int] = {}

    def authenticate(self, authorization: str | bytes | None) -> Principal:
        """The principal of a request's ``Authorization`` header value; raises 401."""
        token = keys.bearer(authorization)
        if token is None:
            raise Unauthorized("missing API key: send 'Authorization: Bearer <key>' "
                               "(cellbox key create makes one; root on the server finds one in admin.key)")
        parsed = keys.parse(token)
        if parsed is None:
            raise Unauthorized("invalid API key: not a cellbox key (cbx_<id>_<secret>)")
        key_id, secret = parsed
        row = self.store.get_key(key_id)
        # The same message for unknown and wrong: a probe learns nothing about which IDs exist.
        if row is None or not keys.matches(secret, row.hash):
            raise Unauthorized("invalid API key")
        now = now_ms()
        if row.revoked_at is not None:
            raise Unauthorized(f"API key {key_id} was revoked")
        if row.expires_at is not None and row.expires_at <= now:
            raise Unauthorized(f"API key {key_id} has expired")
        if now - self._touched.get(key_id, 0) >= TOUCH_EVERY_MS:
            self._touched[key_id] = now
            self.store.touch_key(key_id, now)
        return Principal(row.id, row.project, row.role)


def proxy_resolver(resolve: Callable[..., Awaitable[tuple[str, int, str]]], auth: Authenticator
                   ) -> Callable[[str, int, bytes | None], Awaitable[tuple[str, int, str]]]:
    """The proxy's resolver: authenticate, then let ``resolve(ref, port, principal, error)``
    decide (a request without a valid key may still reach an unauthenticated port)."""

    async def resolver(ref: str, port: int, authorization: bytes | None) -> tuple[str, int, str]:
        try:
            principal = auth.authenticate(authorization)
        except Unauthorized as exc:
            return await resolve(ref, port, None, exc)
        return await resolve(ref, port, principal)

    return resolver
