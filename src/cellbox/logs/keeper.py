"""Each sandbox's output, kept on the host after the sandbox is gone.

Why on the host: a terminated sandbox's agent (and the output it holds in memory) is
gone with it, but Tensorlake's logs outlive the sandbox (archived sandboxes are read
for days). When a sandbox ends through the server (delete, timeout), what its agent
still holds is written here, under ``<data dir>/logs/<id>/``, as JSON lines.

Bounded: ``current.jsonl`` grows to ``max_bytes``, then rotates to ``previous.jsonl``
(the older generation is dropped), so one sandbox keeps at most twice the cap. The
files are the host's own (the sandbox never sees this directory), so reading them
needs no ``inroot`` care; what they hold came from the sandbox, so each line is
parsed defensively and a line that is not ours is skipped.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

from .. import ids
from ..manager.logs import LogLine

DEFAULT_MAX_BYTES = int(os.environ.get("CELLBOX_LOG_KEEP_BYTES", str(8 << 20)))
CURRENT, PREVIOUS = "current.jsonl", "previous.jsonl"
SUSPENDED = "suspended.jsonl"
LOCK = ".collector.lock"  # held by the one server process collecting the sandbox  # what the agent held when it was last suspended (replaced each time)


class LogKeeper:
    def __init__(self, base: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.base = base
        self.max_bytes = max_bytes

    def _dir(self, sandbox_id: str) -> Path:
        if not ids.is_id(sandbox_id):  # the path's one variable part: never a name or ../
            raise ValueError(f"not a sandbox ID: {sandbox_id!r}")
        return self.base / sandbox_id

    def _entry(self, line: LogLine, seq: int | None = None) -> str:
        """One JSON line (a body's newlines are escaped: one entry can never become two).
        An entry is at most an eighth of the cap: a huge line is cut, so no single write
        takes the file past it."""
        doc: dict[str, object] = {"t": line.timestamp, "b": line.body, "p": line.pid, "c": line.command,
                                  "l": line.level}
        if seq is not None:
            doc["s"] = seq
        entry = json.dumps(doc) + "\n"
        limit = max(256, self.max_bytes // 8)
        while len(entry) > limit:  # ensure_ascii: up to 12 bytes a character
            doc["b"] = line.body[: max(0, len(str(doc["b"])) * limit // len(entry) - 64)] + " [cut by cellbox]"
            entry = json.dumps(doc) + "\n"
        return entry

    def snapshot(self, sandbox_id: str, lines: list[LogLine]) -> None:
        """Replace the suspend-time copy (the agent's output survives a suspend in its
        memory, so the next one is a superset: appending would repeat it)."""
        d = self._dir(sandbox_id)
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = d / (SUSPENDED + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            budget = self.max_bytes  # the newest lines, within the cap
            keep: list[str] = []
            for line in reversed(lines):
                entry = self._entry(line)
                budget -= len(entry.encode())
                if budget < 0:
                    break
                keep.append(entry)
            f.writelines(reversed(keep))
        os.replace(tmp, d / SUSPENDED)

    def append(self, sandbox_id: str, lines: list[LogLine], seqs: list[int] | None = None) -> None:
        """Append ``lines`` (with the agent journal's sequence numbers, from the collector),
        rotating at the cap: one sandbox holds at most twice ``max_bytes`` here."""
        d = self._dir(sandbox_id)
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        entries = [self._entry(ln, seqs[i] if seqs else None) for i, ln in enumerate(lines)]
        while entries:
            size = self._size(d / CURRENT)
            batch: list[str] = []
            room = self.max_bytes - size
            while entries and (len(entries[0]) <= room or (not batch and size == 0)):
                room -= len(entries[0])
                batch.append(entries.pop(0))
            if not batch:
                os.replace(d / CURRENT, d / PREVIOUS)
                continue
            # 0600: a process may print what it should not (a secret's value); root's alone.
            fd = os.open(d / CURRENT, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "a", encoding="utf-8") as f:
                f.writelines(batch)

    @staticmethod
    def _size(path: Path) -> int:
        try:
            return path.stat().st_size
        except FileNotFoundError:
            return 0

    def lock(self, sandbox_id: str) -> int | None:
        """Take the sandbox's collector lock (``flock``, released when the fd closes or the
        process dies): servers sharing a data dir must not both collect one sandbox, or
        every line would be written twice. The fd, or None if another process holds it."""
        d = self._dir(sandbox_id)
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(d / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

    def last_seq(self, sandbox_id: str) -> int | None:
        """The journal sequence number of the newest collected line (where the collector
        goes on after a server restart), None if none was collected."""
        d = self._dir(sandbox_id)
        for name in (CURRENT, PREVIOUS):
            try:
                with (d / name).open("rb") as f:
                    size = f.seek(0, 2)
                    f.seek(max(0, size - (self.max_bytes // 8 + 4096)))
                    tail = f.read().decode("utf-8", "replace").splitlines()
            except FileNotFoundError:
                continue
            for raw in reversed(tail):
                try:
                    seq = json.loads(raw).get("s")
                except (ValueError, AttributeError):
                    continue
                if isinstance(seq, int) and not isinstance(seq, bool):
                    return seq
        return None

    def read(self, sandbox_id: str) -> list[LogLine]:
        d = self._dir(sandbox_id)
        out: list[LogLine] = []
        names = (PREVIOUS, CURRENT) if (d / CURRENT).exists() else (SUSPENDED,)  # ended awake, or asleep
        for name in names:
            try:
                text = (d / name).read_text(encoding="utf-8", errors="replace")
            except FileNotFoundError:
                continue
            for raw in text.splitlines():
                try:
                    e = json.loads(raw)
                    level = e.get("l", 3)
                    out.append(LogLine(int(e["t"]), str(e["b"]),
                                       e["p"] if isinstance(e["p"], int) else None,
                                       e["c"] if isinstance(e["c"], str) else None,
                                       level if isinstance(level, int) and 1 <= level <= 6 else 3))
                except (ValueError, KeyError, TypeError):
                    continue
        return out

    def has(self, sandbox_id: str) -> bool:
        d = self._dir(sandbox_id)
        return (d / CURRENT).exists() or (d / SUSPENDED).exists()
