"""Project quotas at a cluster create, in the transaction that inserts the sandbox.

The limits are the door's (``quotas`` table, set with ``PUT /quotas/{project}`` on any
replica); the use is the cluster's own rows (placed, not suspended sandboxes), so no
hold table is needed: the new row *is* the hold. A transaction-scoped advisory lock per
project serialises the check-and-insert of racing replicas, so two creates can never
both take a project's last unit; other projects never wait on it.
"""

from __future__ import annotations

from typing import Any

import psycopg

from ..errors import QuotaExceeded, RateLimited
from ..manager.spec import DEFAULT_DISK_MB

DEFAULT_CPUS = 1.0  # CreateSpec's default
USAGE_SQL = """SELECT count(*) AS running_sandboxes,
                      COALESCE(sum(COALESCE((spec->>'cpus')::float, %(cpus)s)), 0) AS vcpus,
                      COALESCE(sum(memory_mb), 0) AS memory_mb,
                      COALESCE(sum(COALESCE((spec->>'disk_mb')::bigint, %(disk)s)), 0) AS disk_mb
               FROM sandboxes WHERE project = %(project)s AND state NOT IN ('terminated', 'failed', 'suspended')"""


def usage_args(project: str) -> dict[str, Any]:
    return {"cpus": DEFAULT_CPUS, "disk": DEFAULT_DISK_MB, "project": project}


async def _lock(cur: psycopg.AsyncCursor[Any], project: str) -> None:
    """The project's quota lock, held until the transaction ends: a check and the row it
    admits (a sandbox, a snapshot command) commit together, before the next check."""
    await cur.execute("SELECT pg_advisory_xact_lock(hashtext('cellbox-quota:' || %s))", (project,))


async def _limits(cur: psycopg.AsyncCursor[Any], project: str) -> dict[str, float]:
    await cur.execute("SELECT doc FROM quotas WHERE project = %s", (project,))
    row = await cur.fetchone()
    return dict(row["doc"]) if row else {}


async def admit(cur: psycopg.AsyncCursor[Any], project: str, spec: dict[str, Any]) -> None:
    """Raise ``QuotaExceeded`` / ``RateLimited`` if this create would pass a limit."""
    await _lock(cur, project)
    limits = await _limits(cur, project)
    if not limits:
        return
    rate = limits.get("creates_per_minute")
    if rate is not None:
        await cur.execute("SELECT count(*) AS n FROM sandboxes WHERE project = %s "
                          "AND created_at > now() - interval '1 minute'", (project,))
        if (await cur.fetchone())["n"] >= rate:
            raise RateLimited(f"project {project!r}: more than {rate:g} creates a minute; retry in 60 s",
                              retry_after=60)
    await cur.execute(USAGE_SQL, usage_args(project))
    use = await cur.fetchone()
    wanted = {"running_sandboxes": 1, "vcpus": spec.get("cpus", DEFAULT_CPUS),
              "memory_mb": spec.get("memory_mb", 1024), "disk_mb": spec.get("disk_mb", DEFAULT_DISK_MB)}
    for name, extra in wanted.items():
        value = limits.get(name)
        if value is not None and float(use[name]) + extra > value:
            raise QuotaExceeded(f"project {project!r}: quota {name} is {value:g}, {float(use[name]):g} in use; "
                                "this create would pass it")


# -- snapshots ---------------------------------------------------------------------------
# A project's snapshots (the listed ones: a client's; suspend images and a copy's
# snapshot are the platform's) and the snapshot commands in flight that will add one.
# The in-flight command is the hold: it is inserted in the transaction that checked,
# under the same per-project lock, so two replicas cannot both take the last one.
SNAPSHOT_USE_SQL = """SELECT
    (SELECT count(*) FROM snapshots WHERE project = %(project)s AND listed)
  + (SELECT count(*) FROM commands c JOIN sandboxes s ON s.id = c.sandbox_id
      WHERE s.project = %(project)s AND c.kind = 'snapshot' AND c.state IN ('queued', 'claimed')
        AND COALESCE((c.payload->>'listed')::boolean, true)) AS snapshots,
    (SELECT COALESCE(sum(size_bytes), 0) FROM snapshots WHERE project = %(project)s AND listed) AS snapshot_bytes"""


async def snapshot_usage(cur: psycopg.AsyncCursor[Any], project: str) -> dict[str, float]:
    await cur.execute(SNAPSHOT_USE_SQL, {"project": project})
    row = await cur.fetchone()
    return {"snapshots": int(row["snapshots"]), "snapshot_bytes": int(row["snapshot_bytes"])}


async def admit_snapshot(cur: psycopg.AsyncCursor[Any], project: str) -> None:
    """Raise ``QuotaExceeded`` if one more snapshot would pass the project's count, or
    its bytes are already at the limit (a snapshot's size is known only once made:
    ``snapshot_bytes_over`` checks again after). Run in the transaction that queues
    the snapshot command; the lock is held until it commits."""
    await _lock(cur, project)
    limits = await _limits(cur, project)
    if limits.get("snapshots") is None and limits.get("snapshot_bytes") is None:
        return
    use = await snapshot_usage(cur, project)
    if (value := limits.get("snapshots")) is not None and use["snapshots"] + 1 > value:
        raise QuotaExceeded(f"project {project!r}: quota snapshots is {value:g}, {use['snapshots']:g} in use")
    if (value := limits.get("snapshot_bytes")) is not None and use["snapshot_bytes"] >= value:
        raise QuotaExceeded(f"project {project!r}: quota snapshot_bytes is {value:g}, "
                            f"{use['snapshot_bytes']:g} in use")


async def snapshot_bytes_over(cur: psycopg.AsyncCursor[Any], project: str) -> str | None:
    """After a snapshot was catalogued (same transaction, under the lock): the refusal
    if the project's snapshots now pass its byte limit. Two that finish together can
    both be refused, never both kept (as on one host: auth/snapshot_quota.py)."""
    await _lock(cur, project)
    value = (await _limits(cur, project)).get("snapshot_bytes")
    if value is None:
        return None
    size = (await snapshot_usage(cur, project))["snapshot_bytes"]
    if size <= value:
        return None
    return f"project {project!r}: quota snapshot_bytes is {value:g}, this snapshot would make it {size:g}"
