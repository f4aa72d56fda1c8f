"""Moving a memory snapshot between nodes through the artifact store.

A snapshot on a node is ``pool/snapshots/<id>/`` (memstate's layout): a read-only
``rootfs`` subvolume, CRIU images in ``mem/`` and ``manifest.json``. Export sends the
subvolume as a ``btrfs send`` stream and tars the rest; import receives the stream
into the same place on the target node and records the snapshot in its SQLite, after
the artifact store has verified every byte (artifacts.py).

Incremental streams (``btrfs send -p`` against the image's subvolume) need the parent
on the target with the same btrfs identity (received_uuid): nodes unpack images on
their own, so the parent would not match and ``btrfs receive`` would refuse. Streams
are full until images too travel as send streams (``parent`` is wired for that).
"""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
from pathlib import Path
from typing import Any

from .. import _proc
from ..manager.service import SandboxService
from ..manager.snapshot_store import SnapshotRecord, SnapshotStatus, SnapshotType
from .artifacts import ArtifactStore

FORMAT = 1


def _snap_dir(service: SandboxService, snapshot_id: str) -> Path:
    return service.manager.settings.pool / "snapshots" / snapshot_id


def _work(service: SandboxService) -> Path:
    base = service.manager.settings.data_dir / "tmp"
    base.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=base, prefix="artifact-"))


async def export_snapshot(service: SandboxService, snap: SnapshotRecord, store: ArtifactStore,
                          parent: Path | None = None) -> tuple[str, int]:
    """Upload a completed snapshot; returns its manifest digest (the artifact address)
    and the bytes its blobs take in object storage (what snapshot quotas count: a
    filesystem snapshot's own record says 0, its rootfs being shared on the node)."""
    src = _snap_dir(service, snap.id)
    work = _work(service)
    try:
        stream, tar = work / "rootfs.btrfs", work / "mem.tar"
        await _proc.run(["btrfs", "send", "-q", *(["-p", str(parent)] if parent else []), "-f", str(stream),
                         str(src / "rootfs")], timeout=900)
        parts = ["manifest.json"] + (["mem"] if (src / "mem").is_dir() else [])
        await _proc.run(["tar", "-C", str(src), "-cf", str(tar), *parts], timeout=900)
        blobs = [await asyncio.to_thread(store.put_blob, name, path)
                 for name, path in (("rootfs.btrfs", stream), ("mem.tar", tar))]
        record = dataclasses.asdict(snap)
        record["status"], record["snapshot_type"] = snap.status.value, snap.snapshot_type.value
        manifest = {"format": FORMAT, "snapshot": record, "blobs": [dataclasses.asdict(b) for b in blobs]}
        digest = await asyncio.to_thread(store.put_manifest, manifest)
        return digest, sum(b.size for b in blobs)
    finally:
        await _proc.run(["rm", "-rf", str(work)], check=False)


def _record(doc: dict[str, Any]) -> SnapshotRecord:
    names = {f.name for f in dataclasses.fields(SnapshotRecord)}
    data = {k: v for k, v in doc.items() if k in names}
    data["status"] = SnapshotStatus(data["status"])
    data["snapshot_type"] = SnapshotType(data["snapshot_type"])
    return SnapshotRecord(**data)


async def import_snapshot(service: SandboxService, digest: str, store: ArtifactStore) -> SnapshotRecord:
    """Make the snapshot at ``digest`` local (a no-op if this node has it); ``Tampered``
    from the store before anything is written to the pool."""
    manifest = await asyncio.to_thread(store.get_manifest, digest)
    snap = _record(manifest["snapshot"])
    # cluster: the snapshot table of the node's manager (no public import method yet)
    snapshots = service.manager.memory.snapshots
    if (have := snapshots.get(snap.id)) is not None and have.status == SnapshotStatus.COMPLETED:
        return have
    files = {b["name"]: await asyncio.to_thread(store.fetch_blob, b) for b in manifest["blobs"]}
    dest = _snap_dir(service, snap.id)
    dest.mkdir(parents=True, exist_ok=False)
    try:
        await _proc.run(["btrfs", "receive", "-q", "-f", str(files["rootfs.btrfs"]), str(dest)], timeout=900)
        await _proc.run(["tar", "-C", str(dest), "-xf", str(files["mem.tar"])], timeout=900)
    except BaseException:
        await _proc.run(["btrfs", "subvolume", "delete", str(dest / "rootfs")], check=False)
        await _proc.run(["rm", "-rf", str(dest)], check=False)
        raise
    snapshots.insert(snap)
    return snap
