"""The door's tables in the cluster database (keys, quotas, secrets, audit), and the
command kinds of the wider API (snapshots, copies, network policy).

So control-plane replicas share keys without a shared ``cellbox.db``: a key made
through one replica is a row every replica reads (``cluster/keystore.py``). Times are
milliseconds since the epoch, as in the single-host SQLite tables, so the rows map to
the same ``KeyRow`` either way.
"""

from alembic import op

revision = "0002"
down_revision = "0001"

KINDS_OLD = "'create', 'destroy', 'suspend', 'resume'"
# 'migrate' is live migration's (another branch), listed so its command needs no
# second change of this constraint.
KINDS_NEW = KINDS_OLD + ", 'snapshot', 'policy', 'migrate'"

UP = f"""
CREATE TABLE api_keys (
    id           text PRIMARY KEY,
    hash         text NOT NULL,          -- SHA-256 of the secret; the key itself is never stored
    project      text NOT NULL,
    role         text NOT NULL CHECK (role IN ('admin', 'member')),
    name         text,
    created_at   bigint NOT NULL,
    expires_at   bigint,
    last_used_at bigint,
    revoked_at   bigint
);
CREATE INDEX api_keys_project ON api_keys (project, created_at);
CREATE TABLE quotas (project text PRIMARY KEY, doc jsonb NOT NULL);
CREATE TABLE secrets (
    project    text NOT NULL,
    name       text NOT NULL,
    value      bytea NOT NULL,               -- sealed by the vault key (auth/vault.py)
    updated_at bigint NOT NULL,
    PRIMARY KEY (project, name)
);
CREATE TABLE audit (
    seq     bigserial PRIMARY KEY,
    at      bigint NOT NULL,
    key_id  text,
    project text,
    action  text NOT NULL,
    object  text,
    status  integer NOT NULL,
    client  text
);
CREATE INDEX audit_project ON audit (project, seq DESC);
ALTER TABLE commands DROP CONSTRAINT commands_kind_check;
ALTER TABLE commands ADD CONSTRAINT commands_kind_check CHECK (kind IN ({KINDS_NEW}));
-- A client's snapshot (listed by GET /snapshots) or a suspend image / a copy's
-- intermediate (not listed): the same artifacts, the same catalog.
ALTER TABLE snapshots ADD COLUMN listed boolean NOT NULL DEFAULT false;
"""

DOWN = f"""
ALTER TABLE snapshots DROP COLUMN listed;
DELETE FROM commands WHERE kind NOT IN ({KINDS_OLD});
ALTER TABLE commands DROP CONSTRAINT commands_kind_check;
ALTER TABLE commands ADD CONSTRAINT commands_kind_check CHECK (kind IN ({KINDS_OLD}));
DROP TABLE audit; DROP TABLE secrets; DROP TABLE quotas; DROP TABLE api_keys;
"""


def upgrade() -> None:
    op.execute(UP)


def downgrade() -> None:
    op.execute(DOWN)
