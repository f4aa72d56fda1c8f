"""What a volume mount is, which paths it may take, and the per-sandbox files it needs.

A mount is a dict (a row of ``volume_mounts``, see ``volume_store.py``)::

    {"volume_id", "name", "mount_path", "read_only", "version_id", "key"}

``key`` (``cbvol-<n>``) names the mount for CRIU: the sandbox's own CRIU config file
(``sandboxes/<id>/criu.conf``, named by the bundle's ``org.criu.config``) says, for
each mount, ``ext-mount-map <mount_path>:<key>`` (at a dump: the mount at that path is
external, recorded as ``key``) and ``ext-mount-map <key>:<host mount>`` (at a restore:
bind that host path where ``key`` was). One file serves both: a dump looks entries up
by mount point, a restore by key, so neither line is ever taken for the other. The
volumes are never in the bundle's ``mounts``: runc would add its own entries for them
(key = destination) and a restore would depend on which of two entries CRIU takes.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidRequest
from ..runtime import checkpoint

MAX_MOUNTS = 16
# Letters, digits and ._@+=- per component: the path is written into a CRIU config line,
# where whitespace and ':' are separators.
_PATH = re.compile(r"(/[A-Za-z0-9._@+=-]+)+")
MAX_PATH = 255
# Mount points the sandbox needs as they are: the runtime's own mounts (bundle.py), the
# agent's tree, and /etc (the host writes the identity files there on every clone and
# restore; the agent reads its users there). A volume may not sit on or under them.
RESERVED = ("/proc", "/sys", "/dev", "/.cellbox", "/etc")


@dataclass(frozen=True)
class MountSpec:
    volume: str  # name or ID, in the caller's project
    mount_path: str
    read_only: bool = False
    version_id: str | None = None


def parse(raw: Any, where: str = "file_systems") -> list[MountSpec]:
    """Tensorlake's ``FileSystemMount`` list (or one mount) → specs; 400 naming the problem."""
    items = raw if isinstance(raw, list) else [raw]
    if len(items) > MAX_MOUNTS:
        raise InvalidRequest(f"{where}: at most {MAX_MOUNTS} volumes per sandbox")
    specs = [_one(item, f"{where}[{i}]") for i, item in enumerate(items)]
    check_paths([s.mount_path for s in specs], where)
    return specs


def _one(item: Any, where: str) -> MountSpec:
    if not isinstance(item, dict):
        raise InvalidRequest(f"{where}: must be an object {{file_system_id, mount_path, read_only?, snapshot_id?}}")
    unknown = set(item) - {"file_system_id", "mount_path", "read_only", "prefetch", "snapshot_id", "owner"}
    if unknown:
        raise InvalidRequest(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    if item.get("owner") is not None:
        raise InvalidRequest(f"{where}.owner: presenting files as another owner is not supported "
                             "(files keep their owners; chown inside the sandbox)", code="NOT_SUPPORTED")
    vol = item.get("file_system_id")
    if not isinstance(vol, str) or not vol or len(vol) > 128:
        raise InvalidRequest(f"{where}.file_system_id: a volume name or ID is required")
    read_only = item.get("read_only", False)
    if not isinstance(read_only, bool) or not isinstance(item.get("prefetch", False), bool):
        raise InvalidRequest(f"{where}: read_only and prefetch must be booleans")
    version = item.get("snapshot_id")
    if version is not None and (not isinstance(version, str) or not version or len(version) > 128):
        raise InvalidRequest(f"{where}.snapshot_id: must be a version ID")
    if version is not None and not read_only:
        raise InvalidRequest(f"{where}: a mount pinned to a version (snapshot_id) must be read_only")
    return MountSpec(vol, mount_path(item.get("mount_path"), f"{where}.mount_path"), read_only, version)


def mount_path(path: Any, where: str = "mount_path") -> str:
    """A canonical absolute path that is neither reserved nor tricky; else 400."""
    if not isinstance(path, str) or not path:
        raise InvalidRequest(f"{where}: an absolute path is required")
    if len(path) > MAX_PATH or "\0" in path or any(ord(c) < 32 for c in path):
        raise InvalidRequest(f"{where}: at most {MAX_PATH} printable characters")
    if not path.startswith("/") or path.startswith("//"):
        raise InvalidRequest(f"{where}: {path!r} must be absolute")
    parts = path.split("/")[1:]
    if path == "/" or any(p in ("", ".", "..") for p in parts) or posixpath.normpath(path) != path:
        raise InvalidRequest(f"{where}: {path!r} must be a canonical path below / (no '.', '..', '//' "
                             "or trailing '/')")
    if not _PATH.fullmatch(path):
        raise InvalidRequest(f"{where}: {path!r}: only letters, digits and ._@+=- in path components")
    for reserved in RESERVED:
        if path == reserved or path.startswith(reserved + "/"):
            raise InvalidRequest(f"{where}: {path!r} is reserved ({reserved} belongs to the sandbox's runtime)",
                                 code="MOUNT_PATH_RESERVED")
    return path


def check_paths(paths: list[str], where: str = "file_systems") -> None:
    """No two mounts of one sandbox at the same path or one inside another."""
    for i, a in enumerate(paths):
        for b in paths[i + 1:]:
            if a == b or a.startswith(b + "/") or b.startswith(a + "/"):
                raise InvalidRequest(f"{where}: mount paths {a!r} and {b!r} overlap", code="MOUNT_PATH_IN_USE")


def next_key(mounts: list[dict[str, Any]]) -> str:
    used = {m["key"] for m in mounts}
    n = 0
    while f"cbvol-{n}" in used:
        n += 1
    return f"cbvol-{n}"


def host_dir(data_dir: Path, sandbox_id: str) -> Path:
    """The sandbox's host-side volume mounts (``volmount.host_mount``) live here, out of
    its state dir: a removal of that tree can never walk into a volume."""
    return data_dir / "volmounts" / sandbox_id


def host_path(data_dir: Path, sandbox_id: str, key: str) -> Path:
    return host_dir(data_dir, sandbox_id) / key


def criu_config_path(state_dir: Path) -> Path:
    return state_dir / "criu.conf"


def write_criu_config(state_dir: Path, data_dir: Path, sandbox_id: str, mounts: list[dict[str, Any]]) -> Path:
    """The sandbox's CRIU config: the shared options, and two lines per volume (above)."""
    lines = [checkpoint.CRIU_CONFIG.rstrip("\n")]
    for m in mounts:
        lines.append(f"ext-mount-map {m['mount_path']}:{m['key']}")
        lines.append(f"ext-mount-map {m['key']}:{host_path(data_dir, sandbox_id, m['key'])}")
    path = criu_config_path(state_dir)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)
    return path
