"""Step timing for the examples: each prints what it did and how long each step took.

``Steps`` is a tiny stopwatch: ``with steps("create sandbox"):`` prints the step's name
and its wall time, and ``steps.summary()`` prints them all as a table at the end.
``sandbox_line`` prints ``sandbox <id>`` for every sandbox an example makes, so its test
can check that each one was terminated.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager


class Steps:
    def __init__(self, title: str) -> None:
        self.title = title
        self.done: list[tuple[str, float]] = []
        self.started = time.perf_counter()
        print(f"== {title}", flush=True)

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            took = time.perf_counter() - start
            self.done.append((name, took))
            print(f"   {took * 1000:8.1f} ms  {name}", flush=True)

    def summary(self) -> None:
        wall = time.perf_counter() - self.started  # steps may overlap (parallel workers): wall time
        width = max((len(n) for n, _ in self.done), default=10)
        print(f"-- {self.title}: {len(self.done)} steps, {wall:.2f} s wall")
        for name, took in self.done:
            print(f"   {name:<{width}}  {took * 1000:9.1f} ms")


def sandbox_line(sandbox_id: str) -> None:
    """Announce a sandbox this example made (its test checks that it is gone at the end)."""
    print(f"sandbox {sandbox_id}", flush=True)


def die(message: str) -> None:
    print(f"FAILED: {message}", file=sys.stderr, flush=True)
    sys.exit(1)
