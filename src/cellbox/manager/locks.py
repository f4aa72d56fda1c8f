"""One lock per sandbox (or image name), for one mutation at a time; pruned.

Why one registry: there were three (two ``dict.setdefault`` registries that grew by
one lock per sandbox ever seen, and a ``WeakValueDictionary``), and two of them locked
the same sandbox at different layers. Locks live here while someone holds or waits
for them; an idle lock is dropped (weak values), so the registry never grows with
the number of sandboxes a long-running server has seen.
"""

from __future__ import annotations

import asyncio
import weakref


class LockRegistry:
    def __init__(self) -> None:
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def get(self, key: str) -> asyncio.Lock:
        """The lock of ``key``; the same object for as long as anyone references it."""
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    def __len__(self) -> int:
        return len(self._locks)
