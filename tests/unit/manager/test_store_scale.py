"""The record store at density (issue 15): the queries list/get, the sweep and the
archive purge run stay O(page) or O(matching rows) at many records -- checked on the
real schema with the query planner, and paging walks every record exactly once."""

from __future__ import annotations

from pathlib import Path

import pytest

from cellbox import ids
from cellbox.manager.records import SandboxRecord, Status
from cellbox.manager.store import Store

N = 3000


@pytest.fixture
def store(tmp_path: Path):
    s = Store(tmp_path / "cellbox.db")
    rows = []
    for i in range(N):
        status = [Status.SUSPENDED, Status.RUNNING, Status.TERMINATED][i % 3]
        rec = SandboxRecord(id=ids.new_id(), namespace="default" if i % 5 else "other", image="img", cpus=1.0,
                            memory_mb=512, disk_mb=1024, status=status, created_at=1_000_000 + i // 2,
                            name=f"n{i}" if i % 7 == 0 else None,
                            terminated_at=2_000_000 + i if status == Status.TERMINATED else None)
        rows.append(rec)
        s.insert(rec)
    s.db.execute("ANALYZE")
    yield s, rows
    s.close()


def _plan(store: Store, sql: str, args: tuple) -> str:
    return " ".join(r[-1] for r in store.db.execute("EXPLAIN QUERY PLAN " + sql, args))


def test_the_store_pages_with_the_query_the_plan_test_checks(store, monkeypatch) -> None:
    s, _ = store
    seen: list[str] = []
    real = s.db

    class Spy:
        def execute(self, sql, args=()):
            seen.append(sql)
            return real.execute(sql, args)

    monkeypatch.setattr(s, "db", Spy())
    s.list_page("default", live_only=True, after=(1, "a"), limit=5)
    assert "(created_at, id) > (?, ?)" in seen[-1]


def test_paging_walks_each_live_record_once_in_order(store) -> None:
    s, rows = store
    want = [r.id for r in sorted(rows, key=lambda r: (r.created_at, r.id))
            if r.namespace == "default" and not r.status.is_final]
    seen, after = [], None
    while True:
        page = s.list_page("default", live_only=True, after=after, limit=97)
        if not page:
            break
        seen += [r.id for r in page]
        after = (page[-1].created_at, page[-1].id)
    assert seen == want  # equal created_at values (i // 2) are ordered by id, none lost or repeated


def test_list_get_and_sweep_queries_use_indexes(store) -> None:
    s, rows = store
    page = _plan(s, "SELECT doc FROM sandboxes WHERE namespace=? AND status NOT IN ('terminated','failed')"
                    " AND (created_at, id) > (?, ?) ORDER BY created_at, id LIMIT ?", ("default", 0, "", 100))
    # the index is sought to the cursor (not walked from the namespace's start), no sort
    assert "sandboxes_ns_order (namespace=? AND (created_at,id)>(?,?))" in page and "TEMP B-TREE" not in page
    assert "PRIMARY KEY" in _plan(s, "SELECT doc FROM sandboxes WHERE id=?", ("x",)) or \
        "sqlite_autoindex" in _plan(s, "SELECT doc FROM sandboxes WHERE id=?", ("x",))
    by_name = _plan(s, "SELECT doc FROM sandboxes WHERE namespace=? AND name=? AND status NOT IN "
                       "('terminated','failed')", ("default", "n7"))
    assert "sandboxes_live_name" in by_name
    assert "sandboxes_status" in _plan(s, "SELECT doc FROM sandboxes WHERE status IN (?) ORDER BY created_at, id",
                                       ("running",))


def test_sweep_reads_only_running_records(store) -> None:
    s, rows = store
    got = s.with_status([Status.RUNNING.value])
    assert {r.id for r in got} == {r.id for r in rows if r.status == Status.RUNNING}
    assert [r.id for r in s.with_status(["running"], namespace="other")] == \
        [r.id for r in sorted(rows, key=lambda r: (r.created_at, r.id))
         if r.status == Status.RUNNING and r.namespace == "other"]


def test_purge_picks_final_records_past_the_cutoff_only(store) -> None:
    s, rows = store
    cutoff = 2_000_000 + N // 2
    want = {r.id for r in rows if r.status == Status.TERMINATED and r.terminated_at < cutoff}
    assert set(s.final_before(cutoff)) == want and want
    assert s.live_ids() == {r.id for r in rows if not r.status.is_final}
