"""An undo stack for multi-step operations (create, restore, clone).

Each step that makes something pushes its inverse right after it succeeds. On failure
the stack unwinds in reverse order; on success the operation keeps going and the
teardown path (destroy) runs the same inverses. Inverses must be idempotent and
best-effort: "already gone" counts as success, and one failing inverse does not stop
the others (their errors are collected and re-raised together at the end).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

Inverse = Callable[[], Awaitable[object]]


class Undo:
    def __init__(self) -> None:
        self._steps: list[tuple[str, Inverse]] = []

    def push(self, what: str, inverse: Inverse) -> None:
        self._steps.append((what, inverse))

    async def unwind(self) -> list[BaseException]:
        """Run every inverse, newest first; return the errors instead of stopping at one."""
        errors: list[BaseException] = []
        while self._steps:
            what, inverse = self._steps.pop()
            try:
                await inverse()
            except Exception as exc:  # noqa: BLE001 - keep unwinding, report all
                log.warning("undo %s failed: %s", what, exc)
                errors.append(exc)
        return errors

    def discard(self) -> None:
        """Forget the inverses: the operation succeeded and the result owns its parts."""
        self._steps.clear()
