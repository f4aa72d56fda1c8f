"""Hooks for whoever watches the server (``cellbox/metrics``): timings and counts.

The manager and the proxy call these at a few marked lines and know nothing of
Prometheus; with no observer registered a hook costs one empty loop. This keeps the
metrics out of the manager (being redesigned) and the import graph one-way: this
module imports nothing of cellbox.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

Timing = Callable[[str, float, bool], None]  # (operation, seconds, succeeded)
Count = Callable[[str, str], None]  # (event, label)

_timings: list[Timing] = []
_counts: list[Count] = []


def on_timing(fn: Timing) -> None:
    if fn not in _timings:
        _timings.append(fn)


def on_count(fn: Count) -> None:
    if fn not in _counts:
        _counts.append(fn)


@contextmanager
def timed(operation: str) -> Iterator[None]:
    """Report how long the block took, and whether it raised."""
    started, ok = time.monotonic(), False
    try:
        yield
        ok = True
    finally:
        for fn in _timings:
            fn(operation, time.monotonic() - started, ok)


def count(event: str, label: str = "") -> None:
    for fn in _counts:
        fn(event, label)
