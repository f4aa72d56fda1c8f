"""What a sandbox leaves on the host, found from the host's side (not from our DB).

Used by the suite's final check and by the lifecycle tests: after destroy, nothing
that a sandbox owned may remain, whatever our own records say.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from cellbox.config import Settings
from cellbox.network import firewall
from cellbox.runtime import cgroups


def live_ids(settings: Settings) -> set[str]:
    """IDs of sandboxes whose record says they should exist (any process's, warm ones too)."""
    import sqlite3

    if not settings.db_path.exists():  # a fresh host: no process has made a record yet
        return set()
    db = sqlite3.connect(str(settings.db_path))
    try:
        rows = db.execute("SELECT id FROM sandboxes WHERE status NOT IN ('terminated','failed')").fetchall()
    except sqlite3.OperationalError:  # the file exists but no store has made its tables yet
        return set()
    finally:
        db.close()
    return {r[0] for r in rows}


def leftovers(settings: Settings, sandbox_ids: set[str] | None = None, *, orphans_only: bool = False) -> dict[str, list[str]]:
    """Host objects that look like ours; restricted to ``sandbox_ids`` when given.

    ``orphans_only`` skips objects of sandboxes whose record is live: other managers on
    this host (a server started by the API tests, warm pools refilling) legitimately
    make and remove sandboxes while a test runs; a leak is what has no live owner.
    """
    def keep(name: str) -> bool:
        return sandbox_ids is None or any(sid in name or name in sid for sid in sandbox_ids)

    found: dict[str, list[str]] = {}
    runc = subprocess.run(["runc", "--root", str(settings.runc_root), "list", "-q"], capture_output=True, text=True)
    found["containers"] = [c for c in runc.stdout.split() if keep(c)]
    netns_dir = Path("/run/netns")
    found["netns"] = [n for n in (os.listdir(netns_dir) if netns_dir.exists() else []) if n.startswith("cb-") and keep(n[3:])]
    found["veths"] = [n for n in os.listdir("/sys/class/net") if n.startswith("cb") and n != settings.bridge and keep(n[2:])]
    found["cgroups"] = [str(p) for p in cgroups.leftover_cgroups() if keep(p.name)]
    sbx = settings.pool / "sandboxes"
    found["rootfs"] = [p.name for p in sbx.iterdir() if keep(p.name)] if sbx.exists() else []
    found["state_dirs"] = [p.name for p in settings.sandboxes_dir.iterdir() if keep(p.name)] if settings.sandboxes_dir.exists() else []
    nft = subprocess.run(["nft", "list", "chains", "inet"], capture_output=True, text=True)
    found["nft_chains"] = [c for c in firewall._parse_chains(nft.stdout, settings.nft_table) if keep(c)]
    walls = subprocess.run(["nft", "-j", "list", "set", "bridge", settings.nft_table, "ports"],
                           capture_output=True, text=True)
    ports = [e for item in (json.loads(walls.stdout)["nftables"] if walls.returncode == 0 else [])
             for e in item.get("set", {}).get("elem", []) if isinstance(e, str)]
    found["walls_ports"] = [n for n in ports if keep(n[2:])]  # network/walls.py, keyed by veth name
    # CRIU's network lock (an nft table "CRIU-<id>") belongs in the sandbox's own netns
    # and goes with it; one in the host's netns is a lock a dump or restore left behind.
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True)
    found["criu_nft_tables"] = [line.split()[-1] for line in tables.stdout.splitlines()
                                if line.split()[-1:] and line.split()[-1].startswith("CRIU-") and sandbox_ids is None]
    egress_dir = settings.run_dir / "egress"
    found["egress_policies"] = [p.stem for p in egress_dir.glob("*.json") if keep(p.stem)] if egress_dir.is_dir() else []
    mounts = Path("/proc/self/mounts").read_text().splitlines()
    # Rootfs subvolumes, and their idmapped mounts in the state dirs (runtime/userns.py).
    found["mounts"] = [m for m in mounts if ("/pool/sandboxes/" in m or f" {settings.sandboxes_dir}/" in m) and (sandbox_ids is None or any(s in m for s in sandbox_ids))]
    # Host-side volume mounts (manager/volume_mounts.py): data_dir/volmounts/<sandbox id>/<key>.
    volmounts = settings.data_dir / "volmounts"
    found["volume_mounts"] = [m.split()[1] for m in mounts if f" {volmounts}/" in m and keep(m.split()[1])]
    found["volume_mount_dirs"] = [p.name for p in volmounts.iterdir() if keep(p.name)] if volmounts.is_dir() else []
    if orphans_only:
        # Read the records *after* listing the host: a sandbox made in between has its
        # record inserted before any of its parts, so it is seen as live, not leaked.
        live = live_ids(settings)

        def owned(kind: str, value: str) -> bool:
            if kind in ("veths", "walls_ports"):  # "cb" + the first 13 characters of the ID
                return any(lid.startswith(value[2:]) for lid in live)
            return any(lid in value for lid in live)

        found = {k: [v for v in vs if not owned(k, v)] for k, vs in found.items()}
    return {k: v for k, v in found.items() if v}


def orphaned_records(settings: Settings, since_ms: int) -> list[str]:
    """Live records made since ``since_ms`` whose owning process is gone.

    Sandboxes outlive the server that made them (by design), so a test that lost track
    of one (deleted it through the wrong project, or not at all) leaves a sandbox that
    runs on with a live record: ``leftovers(orphans_only=True)`` counts it as owned.
    At the end of the suite every test's server has stopped, so any such record is a
    sandbox some test forgot.
    """
    import sqlite3

    from cellbox.manager import owner

    if not settings.db_path.exists():
        return []
    db = sqlite3.connect(str(settings.db_path))
    try:
        rows = db.execute(
            "SELECT id, namespace, json_extract(doc, '$.owner') FROM sandboxes "
            "WHERE status NOT IN ('terminated','failed') AND created_at >= ?", (since_ms,)).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        db.close()
    return [f"{sid} (namespace {ns})" for sid, ns, own in rows if not owner.is_alive(own)]
