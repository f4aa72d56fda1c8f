"""Alembic environment: online migrations only, against the URL the caller sets.

No alembic.ini: ``cellbox.cluster.migrate`` builds the config in code so a packaged
install needs no file next to it. Alembic takes no lock of its own, so two control-plane
replicas starting together would both run a migration: a session advisory lock makes
the second wait and then find the schema current.
"""

from alembic import context
from sqlalchemy import create_engine, pool

url = context.config.get_main_option("sqlalchemy.url")
engine = create_engine(url, poolclass=pool.NullPool)
MIGRATE_LOCK = 0x63656C6C  # "cell": any constant the cluster's other locks don't use
with engine.connect() as conn:
    conn.exec_driver_sql(f"SELECT pg_advisory_lock({MIGRATE_LOCK})")
    conn.commit()
    context.configure(connection=conn, target_metadata=None, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()
    conn.exec_driver_sql(f"SELECT pg_advisory_unlock({MIGRATE_LOCK})")
    conn.commit()
engine.dispose()
