# The settings of bench/density.py's own cellbox instance (source this file): its own
# data dir and pool, bridge, subnet, nft table, runc root, netns/veth prefix and cgroup
# parent, so its reconcile never touches another instance's objects on a shared host.
export CELLBOX_DATA_DIR=/var/lib/cellbox-density CELLBOX_POOL_SIZE_GB=40 CELLBOX_BRIDGE=cbdens0 \
       CELLBOX_SUBNET=10.212.0.0/16 CELLBOX_NFT_TABLE=cbdens CELLBOX_RUNC_ROOT=/run/cbdens/runc \
       CELLBOX_RUN_DIR=/run/cbdens CELLBOX_VETH_PREFIX=cd CELLBOX_CGROUP_PARENT=cbdens CELLBOX_E2B=0
