#!/usr/bin/env bash
# A local cluster on one machine: PostgreSQL, N nodes each in its own network
# namespace, one control plane.
#
#   scripts/cluster-dev.sh up N     start it (idempotent only after a down)
#   scripts/cluster-dev.sh down     remove everything `up` made
#   scripts/cluster-dev.sh env      print the variables a client needs
#
#   CLUSTER_WARM_POOL=K (default 0): each node keeps a warm pool of K sandboxes (its floor;
#   it sizes itself from demand) and cluster creates claim from it.
#
# Topology (all private to this script, on 10.240.0.0/24; nothing routed anywhere else
# and no host route or policy touched but the link route of that /24 on its bridge):
#
#   root ns: bridge cxdev0 10.240.0.1 -- PostgreSQL (10.240.0.1 + 127.0.0.1), control
#            |                          plane (API 127.0.0.1:$API_PORT, proxy :$PROXY_PORT)
#            +-- veth cxd-nK <-> eth0 in netns cbx-node-K, 10.240.0.(10+K):9443 = node K's
#                data path; inside: its own bridge, nft table, subnet 10.241.K.0/24, and
#                its own data dir, loop-mounted pool, runc root and run dir.
#
# State: $CLUSTER_DEV (default /var/lib/cellbox-cluster-dev). Needs root and a host set
# up by scripts/setup.sh --test (postgresql, the default image to copy).
#
# One dev cluster at a time per machine: the names above (cxdev0, cbx-node-K, the
# subnets) are fixed, so `up` takes the lock $CLUSTER_DEV_LOCK (flock, default
# /tmp/cluster-dev.lock; waits up to $CLUSTER_DEV_LOCK_WAIT s, default 1800) and a
# holder process keeps it until `down`. Tests and benches get it through this script.
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=${CLUSTER_DEV:-/var/lib/cellbox-cluster-dev}
PG_PORT=${CLUSTER_PG_PORT:-55432}
API_PORT=${CLUSTER_API_PORT:-8950}
PROXY_PORT=${CLUSTER_PROXY_PORT:-9450}
S3_PORT=${CLUSTER_S3_PORT:-55433}
# Not "cb…": cellbox's `bridge cellbox` table drops frames from unknown ports named cb*.
# CLUSTER_BRIDGE / CLUSTER_NET / CLUSTER_NS: a second dev cluster on the same machine
# (its own bridge, /24 and namespace names; e.g. cxlm0, 10.243.0, cbx-lm).
BR=${CLUSTER_BRIDGE:-cxdev0}
NET=${CLUSTER_NET:-10.240.0}
NS=${CLUSTER_NS:-cbx-node}
VETH=${CLUSTER_VETH:-cxd}
PY=${CELLBOX_PY:-$PWD/.venv/bin/python}
CELLBOX=${CELLBOX_BIN:-$PWD/.venv/bin/cellbox}
PGBIN=$(dirname "$(ls /usr/lib/postgresql/*/bin/pg_ctl | sort -V | tail -1)")
DSN_ROOT="postgresql://postgres@127.0.0.1:$PG_PORT/cellbox"
DSN_NODE="postgresql://postgres@$NET.1:$PG_PORT/cellbox"
# The object store for suspend images: moto's S3 server (a test double of S3 from
# PyPI), on the cluster bridge's address; any S3 works in its place.
S3="http://$NET.1:$S3_PORT"
export AWS_ACCESS_KEY_ID=cellbox-dev AWS_SECRET_ACCESS_KEY=cellbox-dev AWS_REGION=us-east-1

LOCK=${CLUSTER_DEV_LOCK:-/tmp/cluster-dev.lock}
LOCK_WAIT=${CLUSTER_DEV_LOCK_WAIT:-1800}

take_lock() {  # pidfile: a holder process keeps the lock from up to down
    local f=$1 holder
    rm -f "$f"
    # flock ties the lock to an open file: a process must hold it for the cluster's life
    # (sleep, ended by PID at down; its day is the bound if down never comes).
    flock -w "$LOCK_WAIT" "$LOCK" sh -c 'echo $$ > "$1.tmp" && mv "$1.tmp" "$1" && exec sleep 86400' sh "$f" \
        </dev/null >/dev/null 2>&1 &
    holder=$!
    while [ ! -s "$f" ]; do
        kill -0 "$holder" 2>/dev/null || { echo "cluster-dev: $LOCK still held after ${LOCK_WAIT}s" \
            "(another dev cluster is up)" >&2; exit 1; }
        sleep 0.2
    done
}

as_pg() { runuser -u postgres -- "$@"; }

node_env() {  # the CELLBOX_* settings of node $1 (cellbox/config.py)
    local k=$1
    echo CELLBOX_DATA_DIR="$BASE/node-$k" CELLBOX_POOL_SIZE_GB=4 CELLBOX_BRIDGE=cbxn0 \
         CELLBOX_SUBNET="10.241.$k.0/24" CELLBOX_NFT_TABLE=cbxnode CELLBOX_RUNC_ROOT="/run/$NS-$k/runc" \
         CELLBOX_RUN_DIR="/run/$NS-$k" CELLBOX_WARM_POOL="${CLUSTER_WARM_POOL:-0}"
}

in_node() {  # run "$@" in node $1's network namespace, with a private /run/netns
    # Not `ip netns exec`: it remounts /sys, which hides the cgroup hierarchies runc
    # needs. And a private /run/netns (tmpfs in a mount namespace of its own) so the
    # node sees, and could ever remove, only its own sandboxes' namespaces, never those
    # of other cellbox instances on this machine.
    local k=$1; shift
    unshare --mount --propagation slave nsenter --net="/run/netns/$NS-$k" \
        sh -c 'mount -t tmpfs -o mode=755 cbx-netns /run/netns && exec "$@"' sh "$@"
}

wait_port() {  # host port timeout_s
    local i
    for ((i = 0; i < $3 * 10; i++)); do
        (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "cluster-dev: $1:$2 did not open within $3 s" >&2; return 1
}

up_pg() {
    mkdir -p "$BASE/pg"; chown postgres:postgres "$BASE/pg"
    as_pg "$PGBIN/initdb" -D "$BASE/pg/data" -A trust -U postgres --no-sync -E UTF8 >/dev/null
    echo "host all all $NET.0/24 trust" >> "$BASE/pg/data/pg_hba.conf"  # the test subnet only
    as_pg "$PGBIN/pg_ctl" -D "$BASE/pg/data" -l "$BASE/pg/log" -w -t 60 start \
        -o "-c listen_addresses=127.0.0.1,$NET.1 -p $PG_PORT -k $BASE/pg -c fsync=off" >/dev/null
    as_pg "$PGBIN/createdb" -h "$BASE/pg" -p "$PG_PORT" cellbox
}

up_node() {
    local k=$1 ns=$NS-$1
    ip netns add "$ns"
    ip link add "$VETH-n$k" type veth peer name eth0 netns "$ns"
    ip link set "$VETH-n$k" master $BR up
    ip -n "$ns" addr add "$NET.$((10 + k))/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up
    mkdir -p "$BASE/node-$k"
    # The default image's OCI layout, copied (reflinks where the fs allows): building it
    # again per node would fetch Debian's archive N times.
    cp -a --reflink=auto /var/lib/cellbox/oci "$BASE/node-$k/oci"
    env $(node_env "$k") "$PY" -m cellbox.cluster.devhost prepare-node
    # --no-reconcile: the leftover sweep would take other cellbox instances' cgroups on
    # this shared machine for its own leftovers (real nodes are hosts of their own).
    nohup unshare --mount --propagation slave nsenter --net="/run/netns/$ns" sh -c \
        'mount -t tmpfs -o mode=755 cbx-netns /run/netns && exec "$@"' sh env $(node_env "$k") \
        "$CELLBOX" node --cluster "$DSN_NODE" --id "node-$k" --no-reconcile --s3-endpoint "$S3" --s3-bucket cellbox \
        --listen "$NET.$((10 + k)):9443" --key-file "$BASE/cluster.key" >"$BASE/node-$k.log" 2>&1 &
    echo $! > "$BASE/node-$k.pid"
}

cmd_up() {
    local n=${1:?usage: cluster-dev.sh up N}
    [ ! -e "$BASE" ] || { echo "cluster-dev: $BASE exists: run down first" >&2; exit 1; }
    take_lock "$BASE.lock-pid"
    mkdir -p "$BASE"; chmod 711 "$BASE"  # postgres must traverse it to its own pg/
    touch "$BASE/.cluster-dev"
    mv "$BASE.lock-pid" "$BASE/lock.pid"
    ip link add $BR type bridge
    ip addr add "$NET.1/24" dev $BR
    ip link set $BR up
    up_pg
    nohup "$(dirname "$PY")/moto_server" -H "$NET.1" -p "$S3_PORT" >"$BASE/s3.log" 2>&1 &
    echo $! > "$BASE/s3.pid"
    wait_port "$NET.1" "$S3_PORT" 60
    "$PY" -c "import boto3; boto3.client('s3', endpoint_url='$S3').create_bucket(Bucket='cellbox')"
    "$PY" -c "from cellbox.cluster import migrate; migrate.upgrade('$DSN_ROOT')"
    CELLBOX_DATA_DIR="$BASE/control" CELLBOX_CLUSTER="$DSN_ROOT" "$PY" -m cellbox.cluster.devhost prepare-control
    "$PY" -c "from cellbox.cluster.nodeauth import load_key; from pathlib import Path; load_key(Path('$BASE/cluster.key'))"
    cp "$BASE/cluster.key" "$BASE/control/cluster.key"
    for ((k = 1; k <= n; k++)); do up_node "$k"; done
    CELLBOX_DATA_DIR="$BASE/control" nohup "$CELLBOX" server --cluster "$DSN_ROOT" --host 127.0.0.1 \
        --api-port "$API_PORT" --proxy-port "$PROXY_PORT" >"$BASE/control.log" 2>&1 &
    echo $! > "$BASE/control.pid"
    wait_port 127.0.0.1 "$API_PORT" 60
    for ((k = 1; k <= n; k++)); do wait_port "$NET.$((10 + k))" 9443 120; done
    echo "$n" > "$BASE/nodes"
    cmd_env
}

stop_pid() {  # pidfile: TERM, then KILL after 20 s
    local f=$1 pid i
    [ -f "$f" ] || return 0
    pid=$(cat "$f")
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 200; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$f"
}

down_node() {
    local k=$1 ns=$NS-$1
    stop_pid "$BASE/node-$k.pid"
    if ip netns list | grep -qw "$ns"; then
        # What the node started and left running once killed (a kill -9 test): a runc
        # restore or CRIU waiting on a lazy-pages daemon that is gone would hold its
        # sandbox's cgroup forever. Only the node's descendants live in its netns (the
        # sandboxes have netns of their own; the teardown below removes them).
        ip netns pids "$ns" | xargs -r kill -KILL 2>/dev/null || true
        in_node "$k" env $(node_env "$k") "$PY" -m cellbox.cluster.devhost teardown-node || true
    fi
    ip link del "$VETH-n$k" 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
    if mountpoint -q "$BASE/node-$k/pool"; then
        umount "$BASE/node-$k/pool"
    fi
    # The loop device of the pool file (mount -o loop sets autoclear; this is the net).
    losetup -j "$BASE/node-$k/pool.img" -O NAME -n 2>/dev/null | xargs -r -n1 losetup -d || true
    rm -rf "/run/$NS-$k"
}

cmd_down() {
    [ -d "$BASE" ] || { echo "cluster-dev: nothing to remove"; return 0; }
    # Only a directory `up` made (it writes .cluster-dev first) is ever removed.
    [ -f "$BASE/.cluster-dev" ] || { echo "cluster-dev: $BASE was not made by up; not touching it" >&2; exit 1; }
    stop_pid "$BASE/control.pid"
    local k n
    n=$(ls -d "$BASE"/node-* 2>/dev/null | grep -c '/node-[0-9]*$' || true)
    for ((k = 1; k <= n; k++)); do down_node "$k"; done
    stop_pid "$BASE/s3.pid"
    if [ -f "$BASE/pg/data/postmaster.pid" ]; then
        as_pg "$PGBIN/pg_ctl" -D "$BASE/pg/data" -m immediate -w stop >/dev/null || true
    fi
    ip link del $BR 2>/dev/null || true
    stop_pid "$BASE/lock.pid"  # the next dev cluster may start
    rm -rf "$BASE"
    echo "cluster-dev: removed"
}

cmd_env() {
    echo "CELLBOX_API_URL=http://127.0.0.1:$API_PORT"
    echo "CELLBOX_PROXY_URL=http://127.0.0.1:$PROXY_PORT"
    echo "CELLBOX_API_KEY_FILE=$BASE/control/admin.key"
    echo "CELLBOX_CLUSTER=$DSN_ROOT"
    echo "CELLBOX_S3_ENDPOINT=$S3"
}

case "${1:-}" in
    up) cmd_up "${2:-}" ;;
    down) cmd_down ;;
    env) cmd_env ;;
    *) echo "usage: $0 up N | down | env" >&2; exit 2 ;;
esac
