"""Connections to the cluster database (psycopg 3, async).

psycopg directly rather than through SQLAlchemy for the queries: the store's hot
paths are a handful of hand-tuned statements (``FOR UPDATE SKIP LOCKED``, fenced
updates) and LISTEN/NOTIFY, which psycopg speaks natively; SQLAlchemy stays for
Alembic's migrations.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
from psycopg.rows import dict_row

from ..errors import InvalidRequest


def check_dsn(dsn: str) -> str:
    if not dsn.startswith(("postgresql://", "postgres://")):
        raise InvalidRequest(f"--cluster wants a PostgreSQL URL (postgresql://user@host:port/db), not {dsn!r}")
    return dsn


class Db:
    """One connection, used by one task at a time (a lock), reconnected when lost.

    The node's loops and each control-plane request are few and short; a pool would
    be the next step for a busy control plane (psycopg_pool), not needed by this slice.
    """

    def __init__(self, dsn: str) -> None:
        self.dsn = check_dsn(dsn)
        self._conn: psycopg.AsyncConnection | None = None
        self._lock = asyncio.Lock()

    async def _connection(self) -> psycopg.AsyncConnection:
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(self.dsn, row_factory=dict_row, autocommit=True,
                                                               connect_timeout=5)
        return self._conn

    @asynccontextmanager
    async def tx(self) -> AsyncIterator[psycopg.AsyncCursor]:
        """A transaction; a connection lost on the way is dropped so the next call reconnects."""
        async with self._lock:
            conn = await self._connection()
            try:
                async with conn.transaction():
                    async with conn.cursor() as cur:
                        yield cur
            except psycopg.OperationalError:
                await conn.close()
                self._conn = None
                raise

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None
