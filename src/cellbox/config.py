"""Where cellbox keeps its state and which host resources it uses.

Everything is derived from one data directory (``CELLBOX_DATA_DIR``, default
``/var/lib/cellbox``) so that a server restart, a test run with its own directory and
a reinstall all find the same state. Values come from environment variables so the
tests and the benchmarks can run a second, independent instance.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

from .agent.config import DEFAULT_PORT as AGENT_PORT


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


@dataclass(frozen=True)
class Settings:
    data_dir: Path = field(default_factory=lambda: Path(_env("CELLBOX_DATA_DIR", "/var/lib/cellbox")))
    # The btrfs pool: a sparse file, loop-mounted, unless data_dir/pool already is btrfs.
    pool_size_gb: int = int(_env("CELLBOX_POOL_SIZE_GB", "64"))
    # A block device (partition or disk) for the pool instead of the loop file: no
    # second filesystem under btrfs, so in-sandbox fsync costs what it costs on the
    # device (bench/pool_backing.py). Formatted only if blank; new installs only.
    pool_device: str = _env("CELLBOX_POOL_DEVICE", "")
    # Host side of the sandbox network. The subnet is ours alone: the bridge is the only
    # route to it, and our nftables table matches only this bridge and this subnet.
    bridge: str = _env("CELLBOX_BRIDGE", "cellbox0")
    subnet: ipaddress.IPv4Network = field(
        default_factory=lambda: ipaddress.IPv4Network(_env("CELLBOX_SUBNET", "10.210.0.0/16"))
    )
    nft_table: str = _env("CELLBOX_NFT_TABLE", "cellbox")
    # Upstream resolvers for the sandboxes' DNS forwarder; default: the host's resolv.conf.
    dns_upstream: str = _env("CELLBOX_DNS_UPSTREAM", "")
    # Network walls (network/walls.py): new flows a sandbox may hold in conntrack at
    # once, and TCP connections it may hold to the resolver (each one is a file
    # descriptor of the server process).
    conntrack_per_sandbox: int = int(_env("CELLBOX_CONNTRACK_PER_SANDBOX", "4096"))
    dns_tcp_per_sandbox: int = int(_env("CELLBOX_DNS_TCP_PER_SANDBOX", "16"))
    default_image: str = _env("CELLBOX_DEFAULT_IMAGE", "cellbox/debian")
    runc: str = _env("CELLBOX_RUNC", "runc")
    agent_port: int = AGENT_PORT
    # Pre-booted sandboxes of the default image kept ready for creates (0 disables).
    warm_pool_size: int = int(_env("CELLBOX_WARM_POOL", "2"))
    # Issue 14: a named sandbox created without timeout_secs suspends after this many
    # idle seconds (Tensorlake's 10 minutes); 0 = never. An explicit timeout_secs wins.
    named_idle_secs: int = int(_env("CELLBOX_NAMED_IDLE_SECS", "600"))
    # Terminated and failed sandboxes stay readable (archived-sandboxes) this long.
    archive_retention_secs: int = int(_env("CELLBOX_ARCHIVE_RETENTION_SECS", str(7 * 86400)))
    # Creating from a pre-booted image: "auto" restores its memory snapshot only when
    # it holds state a boot would not recreate (a warm-up ran, or it was registered
    # from a memory snapshot), since a plain boot measured faster than a restore
    # (bench/images.py); "always" / "never" force one way.
    preboot_restore: str = _env("CELLBOX_PREBOOT_RESTORE", "auto")
    # A user namespace per sandbox (runtime/userns.py): root inside is an unprivileged
    # host uid. "0" turns it off (host-made netns, uid 0 inside = uid 0 outside), for
    # comparison benchmarks and hosts whose kernel cannot id-map the pool's filesystem.
    userns: bool = _env("CELLBOX_USERNS", "1") == "1"

    @property
    def pool_image(self) -> Path:
        return self.data_dir / "pool.img"

    @property
    def pool(self) -> Path:
        return self.data_dir / "pool"

    @property
    def oci_dir(self) -> Path:
        """OCI image layout (blobs by content, index of named images)."""
        return self.data_dir / "oci"

    @property
    def agentfs(self) -> Path:
        """Read-only tree bind-mounted at /.cellbox in every sandbox (interpreter + agent)."""
        return self.data_dir / "agentfs"

    @property
    def sandboxes_dir(self) -> Path:
        """Per-sandbox host state: OCI bundle, logs (not the rootfs, which is in the pool)."""
        return self.data_dir / "sandboxes"

    @property
    def bin_dir(self) -> Path:
        """Helpers built on this host (the network prestart hook)."""
        return self.data_dir / "bin"

    @property
    def runc_root(self) -> Path:
        """runc's state directory, ours alone, so `runc list` there shows only our sandboxes."""
        return Path(_env("CELLBOX_RUNC_ROOT", "/run/cellbox/runc"))

    @property
    def run_dir(self) -> Path:
        return Path(_env("CELLBOX_RUN_DIR", "/run/cellbox"))

    @property
    def db_path(self) -> Path:
        return self.data_dir / "cellbox.db"

    @property
    def gateway(self) -> ipaddress.IPv4Address:
        return next(self.subnet.hosts())


def load() -> Settings:
    return Settings()
