"""Snapshot quotas (count and bytes) checked atomically, like the create quota (issue 12, gap 4).

The count: a snapshot call takes a hold in one ``BEGIN IMMEDIATE`` transaction that
counts the project's snapshots and the holds of calls in flight, so concurrent calls
(in one process or several sharing the database) cannot both take the last one. A
snapshot in progress is counted by its hold only (its record exists from the start,
counting both would refuse a call that fits); a hold of a dead process expires.

The bytes: a snapshot's size is only known once it is made, so the check is in two
steps: before, the project must be under its byte limit; after, in one transaction
again, if the completed snapshots now pass it the new snapshot is deleted and the call
answers 403. Two that finish together can both be refused (never both kept): the
limit is never passed, at the price of a rare refusal of a snapshot that would fit.
"""

from __future__ import annotations

import sqlite3

from .store import HOLD_TTL_MS, now_ms

SCHEMA = """
CREATE TABLE IF NOT EXISTS snapshot_holds (id TEXT PRIMARY KEY, project TEXT NOT NULL, at INTEGER NOT NULL);
"""
# Snapshots that occupy space: completed ones and ones being deleted (files still there).
_COUNTED = "status NOT IN ('failed', 'in_progress')"


class SnapshotQuota:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        db.executescript(SCHEMA)

    def _use(self, project: str) -> tuple[int, int]:
        count, size = self.db.execute(
            f"SELECT COUNT(*), COALESCE(SUM(COALESCE(json_extract(doc, '$.size_bytes'), 0)), 0) "
            f"FROM snapshots WHERE namespace=? AND {_COUNTED}", (project,)).fetchone()
        held = self.db.execute("SELECT COUNT(*) FROM snapshot_holds WHERE project=?", (project,)).fetchone()[0]
        return count + held, size

    def usage(self, project: str) -> dict[str, float]:
        count, size = self._use(project)
        return {"snapshots": count, "snapshot_bytes": size}

    def admit(self, project: str, hold_id: str, limits: dict[str, float]) -> tuple[str, float, float] | None:
        """Hold one snapshot if the project is under both limits; else ``(limit, value, use)``."""
        now = now_ms()
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.execute("DELETE FROM snapshot_holds WHERE at < ?", (now - HOLD_TTL_MS,))
            count, size = self._use(project)
            if (value := limits.get("snapshots")) is not None and count + 1 > value:
                self.db.execute("COMMIT")
                return "snapshots", value, count
            if (value := limits.get("snapshot_bytes")) is not None and size >= value:
                self.db.execute("COMMIT")
                return "snapshot_bytes", value, size
            self.db.execute("INSERT INTO snapshot_holds (id, project, at) VALUES (?,?,?)", (hold_id, project, now))
            self.db.execute("COMMIT")
            return None
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def release(self, hold_id: str) -> None:
        self.db.execute("DELETE FROM snapshot_holds WHERE id=?", (hold_id,))

    def bytes_over(self, project: str, limits: dict[str, float]) -> tuple[float, float] | None:
        """After a snapshot completed: ``(limit, use)`` if the project's bytes now pass it."""
        value = limits.get("snapshot_bytes")
        if value is None:
            return None
        size = self._use(project)[1]
        return (value, size) if size > value else None
