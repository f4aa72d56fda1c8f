"""Named images for the manager: build, pull, register, pre-boot, list, remove, and
create a sandbox from any of them.

Three kinds of image, one namespace of names (``images/refs.py``):

* **OCI images** in the OCI layout: the default image, Dockerfile builds, registry
  pulls. A sandbox boots from a btrfs snapshot of the image's unpacked subvolume,
  exactly as from the default image.
* **Registered snapshots** (spec §5 ``register``): a name for a completed snapshot. The
  image takes its own copy (a btrfs snapshot of the snapshot's files, milliseconds), so
  the snapshot can be deleted afterwards and the image stays whole.
* **Pre-booted images**: either of the above carrying a memory snapshot of a booted
  sandbox (agent up, an optional warm-up command already run). Creating from it is a
  CRIU restore into a new identity instead of a boot when the memory holds work a
  boot would not redo (see ``_restores``; bench/images.py measures both).

Removing an image is refused while a live sandbox uses it (409 ``IMAGE_IN_USE``).
Pre-boot sandboxes and image-owned snapshots live in the reserved namespace
``IMAGES_NAMESPACE``, invisible to listings.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace

from .. import ids
from ..errors import (
    ImageExists,
    InvalidRequest,
    SnapshotNotReady,
)
from ..images import names, refs
from ..images.build import BuildRequest
from ..images.catalog import ImageRecord
from ..network import netns
from ..storage import btrfs, inroot
from ..storage.images import REF_NAME, async_layout_lock, normalize
from ..storage.layer_scan import ImageRefused
from .image_catalog import (
    BUILD_NAMESPACE,
    JOB_STOP_WAIT,
    MAX_WARM_POOL,
    Hooks,
    ImageCatalog,
    ImageInfo, Progress,
    _nothing,
)
from .preboot import IMAGES_NAMESPACE
from .records import SandboxRecord, Status, now_ms
from .snapshot_store import SnapshotRecord, SnapshotStatus, SnapshotType

__all__ = ["BUILD_NAMESPACE", "IMAGES_NAMESPACE", "JOB_STOP_WAIT", "MAX_WARM_POOL", "Hooks", "ImageInfo",
           "ImageManager"]


class ImageManager(ImageCatalog):
    """The catalog plus the jobs that make images: build, pull, register, pre-boot."""

    # -- build and pull -------------------------------------------------------------------

    async def build(self, req: BuildRequest, on_line: Progress = _nothing, *, preboot: bool = False,
                    warmup: Sequence[str] | None = None) -> ImageInfo:
        """Build a Dockerfile into a named image (replacing an image of that name)."""
        name = refs.canonical(req.name, field="name")
        req = replace(req, name=name)
        dockerfile_text = _read_dockerfile(req)
        async with self._lock(name):
            self._check_replaceable(name)
            old = self.catalog.get(name)
            before = self.layout.refs().get(normalize(name))
            previous = None
            if old is not None and old.digest and old.extra.get("build_image_id"):
                previous = (old.extra["build_image_id"], old.digest)
            async with self._build_network() as (netns_path, dns):
                image_id, digest = await self.builder.build(req, on_line, self._ensure_for_build,
                                                            netns_path=netns_path, dns=dns, previous=previous)
            if old is not None and old.digest == digest and not (preboot or warmup) and old.kind == "oci":
                old.extra["build_image_id"] = image_id
                self.catalog.put(old)
                return self.describe(name)  # nothing changed: keep the record (and its pre-boot)
            on_line(f"unpacking {name} ({digest[:19]})")
            await self._unpack_new(name, before, built=True)
            rec = ImageRecord(name=name, kind="oci", source="build", digest=digest, dockerfile=dockerfile_text,
                              extra={"build_image_id": image_id}, warm_pool=old.warm_pool if old else 0)
            self.catalog.put(rec)
            if old is not None:
                for sid in {old.snapshot_id, old.memory_snapshot_id} - {None}:
                    await self._drop_snapshot(sid)  # type: ignore[arg-type]
                if old.digest != digest:
                    await self.layout.collect()  # the replaced image's blobs and subvolume
            if preboot or warmup:
                await self._preboot(rec, list(warmup or []), on_line)
            await self._refresh_pool(name)
        return self.describe(name)

    async def pull(self, image: str, *, username: str | None = None, password: str | None = None,
                   on_line: Progress = _nothing, preboot: bool = False,
                   warmup: Sequence[str] | None = None) -> ImageInfo:
        ref = refs.parse(image)
        if not ref.is_remote:
            raise InvalidRequest(f"image: {image!r} is not a registry reference (HOST[:PORT]/NAME[:TAG])")
        if (username is None) != (password is None):
            raise InvalidRequest("username and password go together")
        async with self._lock(ref.name):
            self._check_replaceable(ref.name)
            if username is not None and password is not None:
                await self.puller.login(ref, username, password)
            old = self.catalog.get(ref.name)
            before = self.layout.refs().get(normalize(ref.name))
            digest = await self.puller.pull(ref, on_line)
            on_line(f"unpacking {ref.name} ({digest[:19]})")
            await self._unpack_new(ref.name, before, built=False)
            rec = ImageRecord(name=ref.name, kind="oci", source="pull", digest=digest,
                              warm_pool=old.warm_pool if old else 0)
            self.catalog.put(rec)
            if old is not None:
                if old.memory_snapshot_id:
                    await self._drop_snapshot(old.memory_snapshot_id)
                if old.digest != digest:
                    await self.layout.collect()
            if preboot or warmup:
                await self._preboot(rec, list(warmup or []), on_line)
            await self._refresh_pool(ref.name)
        return self.describe(ref.name)

    async def _unpack_new(self, name: str, before: str | None, *, built: bool) -> None:
        """Unpack the image a pull or build just named. If its content is refused
        (``layer_scan``: devices, owners, tar bombs, a symlinked ``/proc``...), the name
        goes back to the manifest it had before (or to nothing) and the refused blobs
        are collected: a refused image is never left installed."""
        try:
            await self.layout.resolve(name)
        except ImageRefused:
            ref = normalize(name)
            async with async_layout_lock(self.layout.layout):
                if before is not None:
                    self.layout._set_ref(ref, before, self.layout._blob_path(before).stat().st_size)
                else:
                    index = self.layout._read_index()
                    index["manifests"] = [m for m in index["manifests"]
                                          if m.get("annotations", {}).get(REF_NAME) != ref]
                    self.layout._write_index(index)
            await self.layout.collect()
            if built:
                await self.builder.forget(name)
            raise

    async def ensure_local(self, image: str) -> str:
        """The canonical name of an image that exists here, pulling a registry
        reference the first time it is used; 404 for an unknown local name."""
        ref = refs.parse(image)
        if ref.name in self.layout.refs() or self.catalog.get(ref.name) is not None:
            return ref.name
        if not ref.is_remote:  # issue 14: a Docker Hub short name (images/names.py)
            ref = names.expand_short(image, ref)
            if ref.name in self.layout.refs():
                return ref.name
        ref = names.via_mirror(ref)
        async with self._lock(ref.name):
            if ref.name not in self.layout.refs():
                digest = await self.puller.pull(ref, _nothing)
                # Unpacked (and so checked: layer_scan's caps, devices, owners) before
                # anything uses it, a build's buildah included, whose own store on the
                # host's disk has no such caps; refused, it is not kept.
                await self._unpack_new(ref.name, None, built=False)
                self.catalog.put(ImageRecord(name=ref.name, kind="oci", source="pull", digest=digest))
        return ref.name

    async def _ensure_for_build(self, image: str) -> str:
        name = await self.ensure_local(image)
        rec = self.catalog.get(name)
        if rec is not None and rec.kind != "oci":
            raise InvalidRequest(f"dockerfile: FROM {image}: a registered snapshot cannot be a build base")
        return name

    @contextlib.asynccontextmanager
    async def _build_network(self) -> AsyncIterator[tuple[str | None, str | None]]:
        """A network namespace on the sandbox bridge for the build's RUN steps, held by
        a record in ``BUILD_NAMESPACE`` (its address is allocated like a sandbox's)."""
        rec = SandboxRecord(id=ids.new_id(), namespace=BUILD_NAMESPACE, image="(build)", cpus=0, memory_mb=0,
                            disk_mb=0)
        await self.assembler.allocate(rec)
        try:
            await netns.create(self.settings, rec.id, ipaddress.IPv4Address(rec.ip))
            yield netns.path(rec.id), str(self.settings.gateway)
        finally:
            try:
                await netns.destroy(self.settings, rec.id, ipaddress.IPv4Address(rec.ip))
            finally:
                rec.status, rec.terminated_at, rec.termination_reason = Status.TERMINATED, now_ms(), "build_done"
                self.records.update(rec)

    # -- register and pre-boot ---------------------------------------------------------------

    async def register(self, name: str, snapshot_id: str, *, namespace: str = "default",
                       preboot: bool = False, warmup: Sequence[str] | None = None) -> ImageInfo:
        """Name a completed snapshot (spec §5). A memory snapshot makes a pre-booted image."""
        canon = refs.canonical(name, field="name")
        if refs.parse(canon).is_remote:
            raise InvalidRequest("name: a registered image gets a local name")
        snap = self.memory.get_snapshot(snapshot_id, namespace)
        if snap.status != SnapshotStatus.COMPLETED:
            raise SnapshotNotReady(snapshot_id, snap.status.value)
        async with self._lock(canon):
            self._check_replaceable(canon)
            if canon in self.layout.refs():
                raise ImageExists(canon)
            own = await self._copy_snapshot(snap, canon)
            old = self.catalog.get(canon)
            rec = ImageRecord(name=canon, kind="snapshot", source="register", snapshot_id=own.id,
                              memory_snapshot_id=own.id if snap.snapshot_type == SnapshotType.MEMORY else None,
                              extra={"registered_from": snapshot_id,
                                     "memory_state": snap.snapshot_type == SnapshotType.MEMORY},
                              warm_pool=old_rec.warm_pool if (old_rec := self.catalog.get(canon)) else 0)
            self.catalog.put(rec)
            if old is not None:
                for sid in {old.snapshot_id, old.memory_snapshot_id} - {None}:
                    await self._drop_snapshot(sid)  # type: ignore[arg-type]
            if (preboot or warmup) and rec.memory_snapshot_id is None:
                await self._preboot(rec, list(warmup or []), _nothing)
            await self._refresh_pool(canon)
        return self.describe(canon)

    async def preboot(self, name: str, warmup: Sequence[str] | None = None, on_line: Progress = _nothing) -> ImageInfo:
        """Give an existing image a memory snapshot of a booted sandbox (replacing one)."""
        canon = refs.canonical(name, field="name")
        self.describe(canon)  # 404 if unknown
        async with self._lock(canon):
            rec = self.catalog.get(canon) or ImageRecord(name=canon, kind="oci", source="local",
                                                          digest=self.layout.refs().get(canon))
            old = rec.memory_snapshot_id if rec.memory_snapshot_id != rec.snapshot_id else None
            rec.memory_snapshot_id = None
            self.catalog.put(rec)
            if old:
                await self._drop_snapshot(old)
            await self._preboot(rec, list(warmup or []), on_line)
            await self._refresh_pool(canon)
        return self.describe(canon)

    async def _copy_snapshot(self, snap: SnapshotRecord, image_name: str) -> SnapshotRecord:
        """The image's own copy of a snapshot (btrfs snapshot of its files; the memory
        images, if any, copied with reflinks: both cost next to nothing on the pool)."""
        own = SnapshotRecord(id=ids.new_id(), namespace=IMAGES_NAMESPACE, sandbox_id=snap.sandbox_id,
                             snapshot_type=snap.snapshot_type, base_image=snap.base_image,
                             size_bytes=snap.size_bytes, source=dict(snap.source, image=image_name))
        src, dest = self.memory.snapshot_dir(snap.id), self.memory.snapshot_dir(own.id)
        self.memory.snapshots.insert(own)
        try:
            dest.mkdir(parents=True)
            await btrfs.snapshot(src / "rootfs", dest / "rootfs", readonly=True)
            if (src / "mem").is_dir():
                from .. import _proc

                await _proc.run(["cp", "-a", "--reflink=auto", str(src / "mem"), str(dest / "mem")], timeout=600)
            (dest / "manifest.json").write_text(json.dumps(own.source))
            (dest / "manifest.json").chmod(0o600)  # its bundle config holds the agent's secret
        except BaseException:
            await self.memory.remove_snapshot_files(dest)
            self.memory.snapshots.delete(own.id)
            raise
        own.status = SnapshotStatus.COMPLETED
        self.memory.snapshots.update(own)
        return own

def _read_dockerfile(req: BuildRequest) -> str | None:
    """The Dockerfile's text for the catalog. Read before the builder validates the
    request, so resolved inside the context (a ``../`` name or a link in the uploaded
    context must not make the host read one of its own files) and bounded."""
    try:
        with inroot.Root(req.context) as ctx:
            return ctx.read_bytes(req.dockerfile, 65536).decode(errors="replace")
    except OSError:
        return None
