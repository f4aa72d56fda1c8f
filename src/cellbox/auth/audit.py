"""What the audit log records beyond the API's state-changing calls (issue 12, gap 6):
failed authentications and the proxy's state-changing calls, with the log bounded.

* **Failed authentications** (API and proxy): the key ID when the token is
  well-formed (IDs are public: ``key ls`` shows them), never the token or its
  secret; the path, the 401, the client address. A scanner must not turn each bad
  request into a database write: at most ``FAILED_PER_SECOND`` rows a second per
  process, the rest counted and reported in the next row written (``object``:
  ``+N not recorded``).
* **Proxy calls that change state**: a request through the proxy to a sandbox's
  agent (port 9501) with a method other than GET/HEAD/OPTIONS — process and PTY
  creation, signals, stdin, file writes and deletes. The proxy decides before it
  forwards, so the row records that decision (200: forwarded; else the refusal's
  status), not the agent's answer. Reads and exposed-port traffic (the tenant's own
  application) are not recorded.
* **Bounded**: the table keeps the newest ``MAX_ROWS`` rows; older ones are
  deleted every ``PRUNE_EVERY`` inserts (one indexed DELETE on the primary key).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from . import keys
from .keys import Principal
from .store import AuthStore

FAILED_PER_SECOND = 20
MAX_ROWS = 100_000
PRUNE_EVERY = 1_000
_READS = frozenset({b"GET", b"HEAD", b"OPTIONS", "GET", "HEAD", "OPTIONS"})


def _text(value: str | bytes) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value


def _path_only(target: str) -> str:
    """The path of a request target, without its query (which may carry anything)."""
    return target.split("?", 1)[0][:512]


class Audit:
    def __init__(self, store: AuthStore, *, max_rows: int = MAX_ROWS, per_second: int = FAILED_PER_SECOND,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.max_rows, self.per_second, self.clock = max_rows, per_second, clock
        self._window = -1e9
        self._in_window = 0
        self._suppressed = 0
        self._inserts = 0

    def _write(self, **row: object) -> None:
        self.store.audit(**row)  # type: ignore[arg-type]
        self._inserts += 1
        if self._inserts % min(PRUNE_EVERY, self.max_rows) == 0:
            self.store.prune_audit(self.max_rows)

    def failed_auth(self, *, authorization: str | bytes | None, method: str | bytes, target: str | bytes,
                    status: int, client: str | None, via: str) -> None:
        """One refused request (rate-limited; see the module docstring)."""
        now = self.clock()
        if now - self._window >= 1.0:
            self._window, self._in_window = now, 0
        if self._in_window >= self.per_second:
            self._suppressed += 1
            return
        self._in_window += 1
        token = keys.bearer(authorization)
        parsed = keys.parse(token) if token else None
        note = f"+{self._suppressed} not recorded" if self._suppressed else None
        self._suppressed = 0
        self._write(key_id=parsed[0] if parsed else None, project=None,
                    action=f"{via} {_text(method)} {_path_only(_text(target))}", obj=note, status=status, client=client)

    def proxy_call(self, *, principal: Principal | None, method: str | bytes, target: str | bytes, sandbox: str,
                   port: int, agent_port: int, status: int, client: str | None = None) -> None:
        """A state-changing call to a sandbox's agent through the proxy."""
        if method in _READS or port != agent_port:
            return
        self._write(key_id=principal.key_id if principal else None, project=principal.project if principal else None,
                    action=f"proxy {_text(method)} {_path_only(_text(target))}", obj=sandbox, status=status,
                    client=client)
