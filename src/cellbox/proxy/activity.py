"""Tell the manager a sandbox is in use, without calling it for every chunk.

Named sandboxes are suspended after ``timeout_secs`` *without proxy traffic* (spec
§4.2), so the manager must hear of every request and, while a long stream or a
WebSocket is carrying bytes, at least every few seconds. A callback per chunk would
cost more than the proxying itself on a 50 MiB download, hence the throttle.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

ActivityCallback = Callable[[str], None]


class ActivityTicker:
    """Calls ``callback(sandbox_id)`` at once, then at most once per ``interval`` on ``tick``."""

    __slots__ = ("_callback", "_sandbox_id", "_interval", "_last")

    def __init__(self, callback: ActivityCallback, sandbox_id: str, interval: float) -> None:
        self._callback = callback
        self._sandbox_id = sandbox_id
        self._interval = interval
        self._last = 0.0
        self._fire(time.monotonic())

    def tick(self) -> None:
        now = time.monotonic()
        if now - self._last >= self._interval:
            self._fire(now)

    def _fire(self, now: float) -> None:
        self._last = now
        try:
            self._callback(self._sandbox_id)
        except Exception:  # a broken hook must never break the data path
            log.exception("on_activity(%s) failed", self._sandbox_id)
