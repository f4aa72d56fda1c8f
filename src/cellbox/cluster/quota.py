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


async def admit(cur: psycopg.AsyncCursor[Any], project: str, spec: dict[str, Any]) -> None:
    """Raise ``QuotaExceeded`` / ``RateLimited`` if this create would pass a limit."""
    await cur.execute("SELECT pg_advisory_xact_lock(hashtext('cellbox-quota:' || %s))", (project,))
    await cur.execute("SELECT doc FROM quotas WHERE project = %s", (project,))
    row = await cur.fetchone()
    limits: dict[str, float] = dict(row["doc"]) if row else {}
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
