"""Tiny shared helpers: epoch-ms clock and stderr logging.

Logging goes straight to stderr (the container log when we are PID 1) instead
of through ``logging`` handlers: nothing to configure, nothing that can block
start-up, and a closed stderr must never take the agent down.
"""

from __future__ import annotations

import sys
import time

_quiet = False


def now_ms() -> int:
    """Wall-clock time as integer epoch milliseconds (the API's timestamp unit)."""
    return time.time_ns() // 1_000_000


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


def log(message: str) -> None:
    """Write one line to stderr; never raises (stderr may be gone)."""
    if _quiet:
        return
    try:
        sys.stderr.write(f"cellbox-agent: {message}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
