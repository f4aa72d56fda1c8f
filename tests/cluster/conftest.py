"""Fixtures of the cluster tests: one real PostgreSQL per session, a fresh migrated
database per test (so tests never see each other's rows)."""

from __future__ import annotations

import itertools
import subprocess
from collections.abc import Iterator

import pytest

from cellbox.cluster import migrate

from .pg import PgServer

_seq = itertools.count()


@pytest.fixture(scope="session")
def pg() -> Iterator[PgServer]:
    server = PgServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def dsn(pg: PgServer) -> Iterator[str]:
    name = f"t{next(_seq)}"
    subprocess.run(["runuser", "-u", "postgres", "--", "psql", "-h", str(pg.dir), "-p", str(pg.port), "-d",
                    "cellbox", "-qc", f"CREATE DATABASE {name}"], check=True, capture_output=True)
    url = f"postgresql://postgres@127.0.0.1:{pg.port}/{name}"
    migrate.upgrade(url)
    yield url
