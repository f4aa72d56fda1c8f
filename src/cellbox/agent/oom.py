"""Detect kernel OOM kills via the sandbox cgroup's ``oom_kill`` counter.

A process killed by the OOM killer just looks like "died of SIGKILL" to
``waitpid``.  The cgroup, however, counts OOM kills: cgroup v2
``memory.events`` and cgroup v1 ``memory.oom_control`` both carry a line
``oom_kill N``.  The process manager reads the counter when a process starts and
again when it is reaped; if the process died of SIGKILL that the agent did not
send itself and the counter went up meanwhile, it is reported as OOM-killed.

Caveat (documented, accepted): the counter is per cgroup (the whole sandbox),
so an unrelated process OOM-killed during the lifetime of one that was
SIGKILLed by someone else inside the sandbox would be attributed to it too.

The candidate paths are injectable (``--oom-counter``) so that tests can point
at a fake file and so that hosts without either file simply degrade to "never
OOM-killed".
"""

from __future__ import annotations

DEFAULT_PATHS: tuple[str, ...] = (
    "/sys/fs/cgroup/memory.events",  # cgroup v2 (namespaced: the container's own cgroup)
    "/sys/fs/cgroup/memory/memory.oom_control",  # cgroup v1 memory controller
)


def parse_oom_kill(text: str) -> int | None:
    """Value of the ``oom_kill`` line (not ``oom`` / ``oom_group_kill``), if present."""
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "oom_kill":
            try:
                return int(parts[1])
            except ValueError:
                return None
    return None


class OomCounter:
    """Reads the first usable counter file among ``paths`` (chosen once, lazily)."""

    def __init__(self, paths: tuple[str, ...] | list[str] = DEFAULT_PATHS) -> None:
        self._candidates = tuple(paths)
        self._path: str | None = None
        self._probed = False

    @property
    def path(self) -> str | None:
        self._probe()
        return self._path

    def _probe(self) -> None:
        if self._probed:
            return
        self._probed = True
        for candidate in self._candidates:
            if _read(candidate) is not None:
                self._path = candidate
                return

    def read(self) -> int | None:
        """Current counter value, or None when no counter is available."""
        self._probe()
        if self._path is None:
            return None
        return _read(self._path)


def _read(path: str) -> int | None:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return parse_oom_kill(f.read())
    except OSError:
        return None
