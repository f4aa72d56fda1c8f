"""Bring a cluster database to the newest schema (Alembic, configured in code)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config


def sqlalchemy_url(dsn: str) -> str:
    """SQLAlchemy's name for the same database, on the psycopg 3 driver."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if dsn.startswith(prefix):
            return "postgresql+psycopg://" + dsn[len(prefix):]
    raise ValueError(f"not a PostgreSQL URL: {dsn!r} (postgresql://user@host:port/db)")


def _config(dsn: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    cfg.set_main_option("sqlalchemy.url", sqlalchemy_url(dsn).replace("%", "%%"))
    return cfg


def upgrade(dsn: str) -> None:
    """Idempotent: a second replica starting at the same time waits on Alembic's row lock."""
    command.upgrade(_config(dsn), "head")


def downgrade(dsn: str, revision: str = "base") -> None:
    command.downgrade(_config(dsn), revision)
