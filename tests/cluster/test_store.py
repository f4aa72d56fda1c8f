"""The cluster store against a real PostgreSQL: migrations, the outbox's one-open-
command rule, claim races over real concurrent connections, fencing, the reaper."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import psycopg
import pytest

from cellbox.cluster import migrate, nodes, outbox
from cellbox.cluster.db import Db
from cellbox.cluster.records import NodeInfo
from cellbox.errors import Conflict, InvalidRequest, NotFound

pytestmark = pytest.mark.root  # the throwaway PostgreSQL runs as user postgres (runuser)

NODE = NodeInfo("n1", "10.240.0.11:9443", capacity_sandboxes=50, capacity_mem_mb=8192,
                fingerprint={"kernel": "6.18", "cpu": "abc", "criu": "4.1"}, images=("cellbox/debian",))


def run(coro):
    return asyncio.run(coro)


async def _new(db: Db, n: int, node: str = "n1", named: bool = False) -> list:
    return [await outbox.create(db, f"sb{i}", "p1", f"name{i}" if named else None, node, "cellbox/debian", 512, {})
            for i in range(n)]


def test_migrations_are_idempotent_and_reversible(dsn: str) -> None:
    migrate.upgrade(dsn)  # already at head: a no-op, not an error
    migrate.downgrade(dsn)
    with psycopg.connect(dsn) as c:
        assert c.execute("SELECT to_regclass('commands')").fetchone()[0] is None
    migrate.upgrade(dsn)
    with psycopg.connect(dsn) as c:
        assert c.execute("SELECT version_num FROM alembic_version").fetchone()[0] == "0002"


def test_concurrent_upgrades_wait_on_each_other(dsn: str) -> None:
    """Three replicas (processes: Alembic's context is per process) start at once on
    an empty database: one migrates, the others wait on the advisory lock."""
    migrate.downgrade(dsn)
    code = f"from cellbox.cluster import migrate; migrate.upgrade({dsn!r})"
    procs = [subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True) for _ in range(3)]
    errs = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errs
    with psycopg.connect(dsn) as c:
        assert c.execute("SELECT count(*) FROM alembic_version").fetchone()[0] == 1


def test_a_migration_waits_for_the_one_in_progress(dsn: str) -> None:
    """The advisory lock is really taken: while another session holds it, an upgrade
    waits on it (seen in pg_locks), and goes on once it is released."""
    migrate.downgrade(dsn)
    with psycopg.connect(dsn, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (0x63656C6C,))
        code = f"from cellbox.cluster import migrate; migrate.upgrade({dsn!r})"
        proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
        try:
            for _ in range(600):  # until the upgrade's session queues for the lock
                waiting = holder.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                                         "AND NOT granted").fetchone()[0]
                if waiting or proc.poll() is not None:
                    break
                time.sleep(0.1)
            assert waiting == 1 and proc.poll() is None
            assert holder.execute("SELECT to_regclass('commands')").fetchone()[0] is None  # nothing done yet
        finally:
            holder.execute("SELECT pg_advisory_unlock(%s)", (0x63656C6C,))
        assert proc.wait(timeout=120) == 0, proc.stderr.read()
        assert holder.execute("SELECT to_regclass('commands')").fetchone()[0] == "commands"


def test_bad_dsn_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="PostgreSQL URL"):
        Db("sqlite:///x.db")


def test_one_unfinished_command_per_sandbox(dsn: str) -> None:
    async def main() -> None:
        db = Db(dsn)
        lease = await nodes.register(db, NODE)
        await _new(db, 1)  # its create command is open
        with pytest.raises(Conflict, match="in flight"):
            await outbox.submit(db, "sb0", "p1", "destroy", "terminated")
        cmd = await outbox.claim(db, lease)
        assert await outbox.finish(db, lease, cmd, ok=True, state="running", local_id="L0")
        cmd2 = await outbox.submit(db, "sb0", "p1", "destroy", "terminated")
        assert cmd2.generation == 2
        with pytest.raises(NotFound):  # another project cannot even learn it exists
            await outbox.submit(db, "sb0", "p2", "destroy", "terminated")
        await db.close()
    run(main())


def test_a_taken_name_is_a_conflict_and_leaves_nothing(dsn: str) -> None:
    async def main() -> None:
        db = Db(dsn)
        await nodes.register(db, NODE)
        await outbox.create(db, "a", "p1", "web", "n1", None, 512, {})
        with pytest.raises(Conflict, match="web"):
            await outbox.create(db, "b", "p1", "web", "n1", None, 512, {})
        await outbox.create(db, "c", "p2", "web", "n1", None, 512, {})  # names are per project
        with pytest.raises(NotFound):
            await outbox.get_sandbox(db, "b", "p1")
        await db.close()
    run(main())


def test_concurrent_claimers_take_each_command_exactly_once(dsn: str) -> None:
    """8 real connections claim for the same node at once: no command twice, none lost."""
    async def main() -> None:
        setup = Db(dsn)
        lease = await nodes.register(setup, NODE)
        await _new(setup, 40)
        claimers = [Db(dsn) for _ in range(8)]

        async def drain(db: Db) -> list[int]:
            got = []
            while (cmd := await outbox.claim(db, lease)) is not None:
                got.append(cmd.id)
            return got
        taken = await asyncio.gather(*(drain(db) for db in claimers))
        flat = [i for part in taken for i in part]
        assert len(flat) == 40 and len(set(flat)) == 40
        assert sum(1 for part in taken if part) > 1  # they really ran side by side
        for db in [setup, *claimers]:
            await db.close()
    run(main())


def test_skip_locked_does_not_wait_on_a_row_another_claimer_holds(dsn: str) -> None:
    """A claimer whose transaction stalls with a row locked does not block the others."""
    async def main() -> None:
        db = Db(dsn)
        lease = await nodes.register(db, NODE)
        await _new(db, 2)
        async with await psycopg.AsyncConnection.connect(dsn) as holder:
            await holder.execute("BEGIN")
            await holder.execute("SELECT id FROM commands ORDER BY id LIMIT 1 FOR UPDATE")
            cmd = await asyncio.wait_for(outbox.claim(db, lease), timeout=30)
            assert cmd.sandbox_id == "sb1"  # skipped the locked sb0, did not wait for it
            await holder.execute("ROLLBACK")
        await db.close()
    run(main())


def test_a_node_whose_lease_lapsed_cannot_act(dsn: str) -> None:
    """Fencing: claim, lease lapses, then finishing, heartbeating and claiming are refused."""
    async def main() -> None:
        db = Db(dsn)
        lease = await nodes.register(db, NODE, lease_s=1.0)
        await _new(db, 2)
        cmd = await outbox.claim(db, lease)
        await asyncio.sleep(1.5)  # past the lease by the database's clock
        with pytest.raises(nodes.Fenced):
            nodes.check(lease)  # the node's own deadline already says no
        assert not await outbox.finish(db, lease, cmd, ok=True, state="running", local_id="L")
        assert (await outbox.get_sandbox(db, "sb0", "p1")).state == "pending"
        assert await outbox.claim(db, lease) is None
        with pytest.raises(nodes.Fenced):
            await nodes.heartbeat(db, lease)
        fresh = await nodes.register(db, NODE)  # rejoining is a new epoch...
        assert fresh.epoch == lease.epoch + 1
        assert not await outbox.finish(db, fresh, cmd, ok=True, state="running")  # ...not the claimer's
        await db.close()
    run(main())


def test_reaper_settles_a_dead_nodes_sandboxes(dsn: str) -> None:
    async def main() -> None:
        db = Db(dsn)
        lease = await nodes.register(db, NODE, lease_s=1.0)
        await outbox.create(db, "eph", "p1", None, "n1", None, 512, {})
        await outbox.create(db, "named", "p1", "keep", "n1", None, 512, {})
        await outbox.create(db, "nosnap", "p1", "lost", "n1", None, 512, {})
        for _ in range(3):
            c = await outbox.claim(db, lease)
            await outbox.finish(db, lease, c, ok=True, state="running",
                                snapshot_id="snap1" if c.sandbox_id == "named" else None)
        await outbox.submit(db, "eph", "p1", "suspend", "suspended")  # left open by the dying node
        assert await nodes.reap(db) == []  # the lease still holds
        await asyncio.sleep(1.5)
        reapers = [Db(dsn) for _ in range(3)]  # replicas sweeping at once settle it once
        dead = await asyncio.gather(*(nodes.reap(r) for r in reapers))
        assert sorted(x for d in dead for x in d) == ["n1"]
        eph = await outbox.get_sandbox(db, "eph", "p1")
        assert eph.state == "failed" and eph.reason.startswith("node_lost") and eph.node_id is None
        named = await outbox.get_sandbox(db, "keep", "p1")
        assert named.state == "suspended" and named.node_id is None and named.snapshot_id == "snap1"
        assert (await outbox.get_sandbox(db, "lost", "p1")).state == "failed"
        async with db.tx() as cur:
            await cur.execute("SELECT state, error FROM commands WHERE kind = 'suspend'")
            row = await cur.fetchone()
        assert row["state"] == "failed" and "node_lost" in row["error"]
        with pytest.raises(nodes.Fenced):  # a dead node stays fenced even if it wakes up in time
            await nodes.heartbeat(db, lease)
        for d in [db, *reapers]:
            await d.close()
    run(main())


def test_finish_racing_the_reaper_never_both_win(dsn: str) -> None:
    """The reaper's transaction holds the command row; the node's finish waits on it,
    then re-checks and is refused (no result applied over the reaper's)."""
    async def main() -> None:
        db, other = Db(dsn), Db(dsn)
        lease = await nodes.register(db, NODE, lease_s=1.0)
        await _new(db, 1)
        cmd = await outbox.claim(db, lease)
        await asyncio.sleep(1.5)
        reaped, finished = await asyncio.gather(nodes.reap(other), outbox.finish(db, lease, cmd, ok=True,
                                                                                 state="running"))
        assert reaped == ["n1"] and finished is False
        assert (await outbox.get_sandbox(db, "sb0", "p1")).state == "failed"
        await db.close()
        await other.close()
    run(main())


def test_queued_command_wakes_its_node_with_notify(dsn: str) -> None:
    """The hint: the node's channel gets the command's ID on commit."""
    async def main() -> None:
        db = Db(dsn)
        await nodes.register(db, NODE)
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as listener:
            chan = (await (await listener.execute("SELECT 'cellbox_node_' || md5('n1')")).fetchone())[0]
            await listener.execute(f'LISTEN "{chan}"')
            cmd = (await _new(db, 1))[0]
            note = await asyncio.wait_for(anext(listener.notifies()), timeout=30)
            assert note.payload == str(cmd.id)
        await db.close()
    run(main())
