"""Storage: the btrfs pool, images, per-sandbox root filesystems (and later snapshots).

Why btrfs (measured, see docs/ARCHITECTURE.md): a subvolume snapshot of a 1 GiB /
10k-file tree takes ~6 ms whatever the data size, a qgroup limit enforces ``disk_mb``
with EDQUOT inside the sandbox, and a SQLite workload runs within noise of native.
"""
