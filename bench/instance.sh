#!/usr/bin/env bash
# A benchmark instance of its own on a shared host: data dir, pool, bridge, subnet, nft
# table, runc root, veth prefix and cgroup parent all its own, so its server's start-up
# reconcile never touches another instance's netns, cgroups or veths.
#
#   source bench/instance.sh NAME [INDEX]   # exports CELLBOX_*; prepares the data dir once
#
# NAME: a-z (the cgroup parent and dir suffix); INDEX 1-30 picks the subnet 10.(220+INDEX).0.0/16,
# the bridge qbrINDEX (not cb*: every instance's walls match ports named cb*)
# and the veth prefix. Needs a host set up by scripts/setup.sh (the default image to copy).
NAME=${1:?usage: source bench/instance.sh NAME [INDEX]}
IDX=${2:-9}
PFX=$(printf "\\x$(printf %x $((97 + IDX % 26)))")
export CELLBOX_DATA_DIR=/var/lib/cellbox-$NAME CELLBOX_POOL_SIZE_GB=16 CELLBOX_BRIDGE=qbr$IDX \
  CELLBOX_SUBNET=10.$((220 + IDX)).0.0/16 CELLBOX_NFT_TABLE=cellbox_$NAME CELLBOX_RUNC_ROOT=/run/cellbox-$NAME/runc \
  CELLBOX_RUN_DIR=/run/cellbox-$NAME CELLBOX_VETH_PREFIX=q$PFX CELLBOX_CGROUP_PARENT=$NAME
_py=${CELLBOX_PY:-$(dirname "${BASH_SOURCE[0]}")/../.venv/bin/python}
if [ ! -e "$CELLBOX_DATA_DIR/admin.key" ]; then
    mkdir -p "$CELLBOX_DATA_DIR"
    [ -e "$CELLBOX_DATA_DIR/oci" ] || cp -a --reflink=auto /var/lib/cellbox/oci "$CELLBOX_DATA_DIR/oci"
    "$_py" -m cellbox.cluster.devhost prepare-node && "$_py" -m cellbox.cluster.devhost prepare-control
fi
