"""The cluster's tables: nodes, sandboxes, the commands outbox, snapshots.

Written as SQL, not ``op.create_table``: the partial unique index, the ``SKIP
LOCKED``-friendly partial index and the NOTIFY trigger are PostgreSQL features the
generic operations would only wrap.
"""

from alembic import op

revision = "0001"
down_revision = None

UP = """
CREATE TABLE nodes (
    id            text PRIMARY KEY,
    address       text NOT NULL,             -- data path: where the proxy reaches this node
    capacity_sandboxes integer NOT NULL,
    capacity_mem_mb    integer NOT NULL,
    labels        jsonb NOT NULL DEFAULT '{}',
    -- what a memory snapshot needs to match: kernel release, CPU flags digest, CRIU version
    fingerprint   jsonb NOT NULL DEFAULT '{}',
    images        text[] NOT NULL DEFAULT '{}',
    state         text NOT NULL DEFAULT 'alive' CHECK (state IN ('alive', 'dead', 'draining')),
    -- fencing: every registration bumps epoch; a node acts only while its epoch holds
    -- a lease in the future (by the database's clock, the only one all agree on)
    epoch         bigint NOT NULL DEFAULT 1,
    lease_until   timestamptz NOT NULL,
    heartbeat_at  timestamptz NOT NULL DEFAULT now(),
    registered_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE sandboxes (
    id            text PRIMARY KEY,
    project       text NOT NULL,
    name          text,
    node_id       text REFERENCES nodes(id),
    local_id      text,                      -- the node's own ID for it (its SQLite cache)
    state         text NOT NULL,
    desired_state text NOT NULL,
    generation    bigint NOT NULL DEFAULT 1, -- bumped by every command: stale results lose
    image         text,
    spec          jsonb NOT NULL DEFAULT '{}',
    memory_mb     integer NOT NULL DEFAULT 1024,
    reason        text,
    snapshot_id   text,                      -- last suspend image, for resume elsewhere
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX sandboxes_project_name ON sandboxes (project, name) WHERE name IS NOT NULL;
CREATE INDEX sandboxes_project_page ON sandboxes (project, created_at DESC, id DESC);
CREATE INDEX sandboxes_node ON sandboxes (node_id) WHERE node_id IS NOT NULL;
CREATE TABLE commands (
    id            bigserial PRIMARY KEY,
    sandbox_id    text NOT NULL REFERENCES sandboxes(id) ON DELETE CASCADE,
    node_id       text NOT NULL REFERENCES nodes(id),
    kind          text NOT NULL CHECK (kind IN ('create', 'destroy', 'suspend', 'resume')),
    payload       jsonb NOT NULL DEFAULT '{}',
    generation    bigint NOT NULL,
    state         text NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'claimed', 'done', 'failed')),
    claimed_epoch bigint,
    result        jsonb,
    error         text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    claimed_at    timestamptz,
    finished_at   timestamptz
);
-- One unfinished command per sandbox: two API replicas racing to mutate one
-- sandbox meet here, not in a node.
CREATE UNIQUE INDEX commands_one_open ON commands (sandbox_id) WHERE state IN ('queued', 'claimed');
-- The claim query's index: only queued rows, per node, oldest first.
CREATE INDEX commands_queue ON commands (node_id, id) WHERE state = 'queued';
CREATE TABLE snapshots (
    id            text PRIMARY KEY,
    project       text NOT NULL,
    sandbox_id    text,
    kind          text NOT NULL CHECK (kind IN ('filesystem', 'memory')),
    artifact      text NOT NULL,             -- object key (content address) of the manifest
    checksum      text NOT NULL,             -- sha256 of the manifest
    size_bytes    bigint NOT NULL DEFAULT 0,
    image         text,
    fingerprint   jsonb NOT NULL DEFAULT '{}',
    cached_on     text[] NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX snapshots_project ON snapshots (project, created_at DESC);
-- LISTEN/NOTIFY is only a wake-up hint: a node that misses one still finds the row
-- on its next poll.
CREATE FUNCTION cellbox_notify_command() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.state = 'queued' THEN
        PERFORM pg_notify('cellbox_node_' || md5(NEW.node_id), NEW.id::text);
    ELSIF NEW.state IN ('done', 'failed') THEN
        PERFORM pg_notify('cellbox_done', NEW.id::text);
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER commands_notify AFTER INSERT OR UPDATE OF state ON commands
    FOR EACH ROW EXECUTE FUNCTION cellbox_notify_command();
CREATE FUNCTION cellbox_notify_route() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.node_id IS DISTINCT FROM OLD.node_id OR NEW.state IS DISTINCT FROM OLD.state THEN
        PERFORM pg_notify('cellbox_route', NEW.id);
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER sandboxes_route AFTER UPDATE ON sandboxes
    FOR EACH ROW EXECUTE FUNCTION cellbox_notify_route();
"""

DOWN = """
DROP TABLE snapshots; DROP TABLE commands; DROP TABLE sandboxes; DROP TABLE nodes;
DROP FUNCTION cellbox_notify_command(); DROP FUNCTION cellbox_notify_route();
"""


def upgrade() -> None:
    op.execute(UP)


def downgrade() -> None:
    op.execute(DOWN)
