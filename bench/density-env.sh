# The settings of bench/density.py's own cellbox instance (source this file): its own
# data dir and pool, bridge, subnet, nft table, runc root, netns/veth prefix and cgroup
# parent, so its reconcile never touches another instance's objects on a shared host.
#   prepare: mkdir -p $CELLBOX_DATA_DIR && cp -a --reflink=auto /var/lib/cellbox/oci $CELLBOX_DATA_DIR/
#            .venv/bin/python -m cellbox.cluster.devhost prepare-node && ... prepare-control
#            export CELLBOX_API_KEY=$(cat $CELLBOX_DATA_DIR/admin.key)
#   run:     .venv/bin/python bench/density.py --count 1000 --pool 4
#   after:   devhost teardown-node if sandboxes are left; umount $CELLBOX_DATA_DIR/pool;
#            ip link del cbdens0; nft delete table inet cbdens; nft delete table bridge cbdens;
#            rmdir /sys/fs/cgroup/*/cbdens; rm -rf $CELLBOX_DATA_DIR /run/cbdens
export CELLBOX_DATA_DIR=/var/lib/cellbox-density CELLBOX_POOL_SIZE_GB=40 CELLBOX_BRIDGE=cbdens0 \
       CELLBOX_SUBNET=10.212.0.0/16 CELLBOX_NFT_TABLE=cbdens CELLBOX_RUNC_ROOT=/run/cbdens/runc \
       CELLBOX_RUN_DIR=/run/cbdens CELLBOX_VETH_PREFIX=cd CELLBOX_CGROUP_PARENT=cbdens CELLBOX_E2B=0
