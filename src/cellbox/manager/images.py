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

import asyncio
import contextlib
import dataclasses
import ipaddress
import json
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from .. import ids
from ..errors import Conflict, InvalidRequest, NotFound
from ..images import refs
from ..images.build import Builder, BuildRequest
from ..images.catalog import Catalog, ImageRecord
from ..images.pull import Puller
from ..images.tools import Tools
from ..network import netns
from ..storage import btrfs, inroot
from ..storage.images import REF_NAME, async_layout_lock, normalize
from ..storage.layer_scan import ImageRefused
from .records import SandboxRecord, Status, now_ms
from .snapshot_store import SnapshotRecord, SnapshotStatus, SnapshotType
from .image_boot import IMAGES_NAMESPACE, BootMixin
from . import warm_sizing
from .warm import WARM_NAMESPACE, WarmPool

if TYPE_CHECKING:
    from .sandboxes import CreateSpec, SandboxManager

log = logging.getLogger(__name__)
BUILD_NAMESPACE = "__build__"
JOB_STOP_WAIT = 60.0
MAX_WARM_POOL = 16
Progress = Callable[[str], None]


@dataclass
class ImageInfo:
    """One named image as the API shows it."""

    name: str
    kind: str  # oci | snapshot
    source: str  # build | pull | register | local
    digest: str | None = None
    snapshot_id: str | None = None
    prebooted: bool = False
    memory_snapshot_id: str | None = None
    warmup: list[str] | None = None
    size_bytes: int | None = None
    layers: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    created_at: int | None = None
    in_use: int = 0
    warm_pool: int = 0  # size asked for
    warm_ready: int = 0  # sandboxes ready now

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _nothing(_: str) -> None:
    pass


class ImageManager(BootMixin):
    def __init__(self, manager: "SandboxManager") -> None:
        self.m = manager
        self.settings = manager.settings
        self.store = manager.images  # the OCI layout + unpacked subvolumes
        self.tools = Tools(manager.settings)
        self.catalog = Catalog(manager.store.db)
        self.builder = Builder(self.tools, self.store)
        self.puller = Puller(self.tools, self.store)
        self._locks: dict[str, asyncio.Lock] = {}
        self._jobs: set[asyncio.Task[Any]] = set()
        self.pools: dict[str, WarmPool] = {}
        self._configs: dict[str, dict[str, Any]] = {}  # image config by manifest digest

    def spawn(self, coro: "Coroutine[Any, Any, Any]") -> "asyncio.Task[Any]":
        """Run an image job in the background (an API build or pull outlives its
        request); :meth:`close` waits for it."""
        task = asyncio.ensure_future(coro)
        self._jobs.add(task)
        task.add_done_callback(self._jobs.discard)
        return task

    async def close(self, timeout: float = JOB_STOP_WAIT) -> None:
        """At server stop: let running jobs finish (bounded), then cancel them, which
        kills their buildah/skopeo process group (``_proc.stream``)."""
        if not self._jobs:
            return
        log.info("waiting for %d image job(s)", len(self._jobs))
        _, pending = await asyncio.wait(set(self._jobs), timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=10)

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    # -- reading ------------------------------------------------------------------------

    def list(self) -> list[ImageInfo]:
        names = set(self.store.refs()) | {r.name for r in self.catalog.list()}
        return [self.describe(n) for n in sorted(names)]

    def describe(self, name: str) -> ImageInfo:
        canon = refs.canonical(name, field="name")
        rec = self.catalog.get(canon)
        digest = self.store.refs().get(canon)
        if rec is None and digest is None:
            raise NotFound(f"image {name!r} not found", code="IMAGE_NOT_FOUND")
        rec = rec or ImageRecord(name=canon, kind="oci", source="local", digest=digest, created_at=0)
        info = ImageInfo(
            name=canon, kind=rec.kind, source=rec.source, digest=digest if rec.kind == "oci" else None,
            snapshot_id=rec.snapshot_id, prebooted=rec.memory_snapshot_id is not None,
            memory_snapshot_id=rec.memory_snapshot_id, warmup=rec.warmup, size_bytes=rec.size_bytes,
            created_at=rec.created_at or None, in_use=len(self.users(canon)), warm_pool=rec.warm_pool,
            warm_ready=self.pools[canon].ready if canon in self.pools else 0,
        )
        if rec.kind == "oci" and digest is not None:
            try:
                manifest = self.store.manifest(digest)
                info.layers = [layer["digest"] for layer in manifest["layers"]]
                info.size_bytes = sum(layer["size"] for layer in manifest["layers"])
                info.config = self._config(digest)
            except FileNotFoundError:
                pass
        return info

    def _config(self, digest: str) -> dict[str, Any]:
        """The run-time part of an image's config; cached, as a digest never changes."""
        cached = self._configs.get(digest)
        if cached is None:
            cfg = self.store.image_config(self.store.manifest(digest)).get("config", {})
            cached = {k: cfg[k] for k in ("Env", "Cmd", "Entrypoint", "WorkingDir", "User") if cfg.get(k)}
            self._configs[digest] = cached
        return cached

    def entrypoint(self, name: str) -> list[str] | None:
        """What a sandbox of this image starts after boot when its create names no
        ``entrypoint``: the image's ``ENTRYPOINT`` with ``CMD`` as its arguments. ``CMD``
        alone is not run: it is the interactive default (a shell), and the agent, not
        the image's command, is the sandbox's init.

        On every create's path, so it reads only the image's config (cached by digest),
        never ``describe`` (which counts the image's users over every live record: it
        made a burst of 100 creates spend 39 % of the server's CPU here)."""
        try:
            digest = self.store.refs().get(refs.canonical(name, field="name"))
            config = self._config(digest) if digest is not None else {}
        except (InvalidRequest, FileNotFoundError):
            return None
        entry = config.get("Entrypoint")
        return [*entry, *(config.get("Cmd") or [])] if entry else None

    def users(self, name: str) -> list[str]:
        """IDs of live sandboxes started from the image (any namespace but ours)."""
        return [r.id for r in self.m.store.list(live_only=True)
                if r.image == name and r.namespace not in (IMAGES_NAMESPACE, BUILD_NAMESPACE, WARM_NAMESPACE)]

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
            before = self.store.refs().get(normalize(name))
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
                    await self.store.collect()  # the replaced image's blobs and subvolume
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
            before = self.store.refs().get(normalize(ref.name))
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
                    await self.store.collect()
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
            await self.store.resolve(name)
        except ImageRefused:
            ref = normalize(name)
            async with async_layout_lock(self.store.layout):
                if before is not None:
                    self.store._set_ref(ref, before, self.store._blob_path(before).stat().st_size)
                else:
                    index = self.store._read_index()
                    index["manifests"] = [m for m in index["manifests"]
                                          if m.get("annotations", {}).get(REF_NAME) != ref]
                    self.store._write_index(index)
            await self.store.collect()
            if built:
                await self.builder.forget(name)
            raise

    async def ensure_local(self, image: str) -> str:
        """The canonical name of an image that exists here, pulling a registry
        reference the first time it is used; 404 for an unknown local name."""
        ref = refs.parse(image)
        if ref.name in self.store.refs() or self.catalog.get(ref.name) is not None:
            return ref.name
        if not ref.is_remote:
            raise NotFound(f"image {image!r} not found", code="IMAGE_NOT_FOUND")
        async with self._lock(ref.name):
            if ref.name not in self.store.refs():
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
        await self.m._allocate(rec)
        try:
            await netns.create(self.settings, rec.id, ipaddress.IPv4Address(rec.ip))
            yield netns.path(rec.id), str(self.settings.gateway)
        finally:
            try:
                await netns.destroy(self.settings, rec.id, ipaddress.IPv4Address(rec.ip))
            finally:
                rec.status, rec.terminated_at, rec.termination_reason = Status.TERMINATED, now_ms(), "build_done"
                self.m.store.update(rec)

    # -- register and pre-boot ---------------------------------------------------------------

    async def register(self, name: str, snapshot_id: str, *, namespace: str = "default",
                       preboot: bool = False, warmup: Sequence[str] | None = None) -> ImageInfo:
        """Name a completed snapshot (spec §5). A memory snapshot makes a pre-booted image."""
        canon = refs.canonical(name, field="name")
        if refs.parse(canon).is_remote:
            raise InvalidRequest("name: a registered image gets a local name")
        snap = self.m.memory.get_snapshot(snapshot_id, namespace)
        if snap.status != SnapshotStatus.COMPLETED:
            raise InvalidRequest(f"snapshot {snapshot_id} is {snap.status.value}, not completed",
                                 code="SNAPSHOT_NOT_READY")
        async with self._lock(canon):
            self._check_replaceable(canon)
            if canon in self.store.refs():
                raise Conflict(f"an image named {canon!r} already exists (built or pulled): remove it first",
                               code="IMAGE_EXISTS")
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
                                                          digest=self.store.refs().get(canon))
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
        src, dest = self.m.memory._snapshot_dir(snap.id), self.m.memory._snapshot_dir(own.id)
        self.m.memory.snapshots.insert(own)
        try:
            dest.mkdir(parents=True)
            await btrfs.snapshot(src / "rootfs", dest / "rootfs", readonly=True)
            if (src / "mem").is_dir():
                from .. import _proc

                await _proc.run(["cp", "-a", "--reflink=auto", str(src / "mem"), str(dest / "mem")], timeout=600)
            (dest / "manifest.json").write_text(json.dumps(own.source))
            (dest / "manifest.json").chmod(0o600)  # its bundle config holds the agent's secret
        except BaseException:
            await self.m.memory._remove_snapshot_files(dest)
            self.m.memory.snapshots.delete(own.id)
            raise
        own.status = SnapshotStatus.COMPLETED
        self.m.memory.snapshots.update(own)
        return own

    async def _drop_snapshot(self, snapshot_id: str) -> None:
        try:
            await self.m.memory.delete_snapshot(snapshot_id)
        except NotFound:
            pass

    # -- warm pools --------------------------------------------------------------------------

    def start_pools(self) -> None:
        """At manager start: a pool for every image that asked for one."""
        for rec in self.catalog.list():
            if rec.warm_pool > 0 and rec.name not in self.pools:
                self._open_pool(rec.name, rec.warm_pool)

    def _open_pool(self, name: str, size: int) -> None:
        pool = WarmPool(self.m, size, image=name, sizer=warm_sizing.sizer_for(size, MAX_WARM_POOL))  # speed: sized
        self.pools[name] = pool
        pool.fill()

    async def _close_pool(self, name: str) -> None:
        pool = self.pools.pop(name, None)
        if pool is not None:
            await pool.close()

    async def close_pools(self) -> None:
        for name in list(self.pools):
            await self._close_pool(name)

    async def _refresh_pool(self, name: str) -> None:
        """After the image changed (rebuilt, re-pulled, pre-booted): its ready sandboxes
        are of the old one; replace them."""
        rec = self.catalog.get(name)
        await self._close_pool(name)
        if rec is not None and rec.warm_pool > 0:
            self._open_pool(name, rec.warm_pool)

    async def set_warm_pool(self, name: str, size: int) -> ImageInfo:
        """Keep ``size`` running sandboxes of the image ready (0: none). Creates that fit
        claim one (~the default image's warm path) instead of booting or restoring."""
        if not 0 <= size <= MAX_WARM_POOL:
            raise InvalidRequest(f"size must be between 0 and {MAX_WARM_POOL}, got {size}")
        canon = refs.canonical(name, field="name")
        if canon == refs.canonical(self.settings.default_image):
            raise InvalidRequest("the default image's pool is set with CELLBOX_WARM_POOL", code="IMAGE_PROTECTED")
        self.describe(canon)  # 404 if unknown
        async with self._lock(canon):
            rec = self.catalog.get(canon) or ImageRecord(name=canon, digest=self.store.refs().get(canon))
            rec.warm_pool = size
            self.catalog.put(rec)
            await self._refresh_pool(canon)
        return self.describe(canon)

    # -- remove -----------------------------------------------------------------------------

    def _check_replaceable(self, name: str) -> None:
        """A build or pull may replace an image that sandboxes use (theirs are copies),
        but never the default image."""
        if name == refs.canonical(self.settings.default_image):
            raise Conflict(f"{name} is the default image; it is made by `cellbox setup`", code="IMAGE_PROTECTED")

    def _check_removable(self, name: str) -> None:
        self._check_replaceable(name)
        if users := self.users(name):
            raise Conflict(f"image {name!r} is in use by {len(users)} sandbox(es): {', '.join(users[:5])}",
                           code="IMAGE_IN_USE")

    async def remove(self, name: str) -> None:
        canon = refs.canonical(name, field="name")
        async with self._lock(canon):
            self.describe(canon)  # 404 if unknown
            self._check_removable(canon)
            await self._close_pool(canon)
            rec = self.catalog.get(canon)
            if canon in self.store.refs():
                await self.store.remove(canon)
                await self.builder.forget(canon)
            if rec is not None:
                for sid in {rec.snapshot_id, rec.memory_snapshot_id} - {None}:
                    await self._drop_snapshot(sid)  # type: ignore[arg-type]
                self.catalog.delete(canon)

    async def prune(self) -> int:
        """Drop the build cache (buildah's untagged images) and any blob or unpacked
        subvolume no name uses; returns how many cached images went. Builds keep their
        cache until then, as ``docker builder prune`` does."""
        pruned = await self.builder.prune() if self.tools.buildah_root.exists() else 0
        await self.store.collect()
        return pruned

    # -- create a sandbox from an image ---------------------------------------------------------

    async def create(self, spec: "CreateSpec", *, preboot: bool = True, warm: bool = True) -> SandboxRecord:
        """A running sandbox from a named image of any kind (pulling a registry
        reference first if needed): claimed from the image's warm pool if it has a
        ready sandbox, else booted or restored. ``preboot=False`` boots even a
        pre-booted image; ``warm=False`` skips the pool (the pool's own builds)."""
        self.m._validate(spec)
        name = await self.ensure_local(spec.image or self.settings.default_image)
        spec = replace(spec, image=name)
        pool = self.pools.get(name)
        if warm and pool is not None and pool.can_serve(spec):
            resolved = await self.m.egress.resolve(spec.network)
            claimed = await self.m.claim_warm(pool, spec, pool.image_mb, resolved)
            if claimed is not None:
                return claimed
        rec = self.catalog.get(name) or ImageRecord(name=name, digest=self.store.refs().get(name))
        return await self._create_from(rec, spec, preboot=preboot)

def _read_dockerfile(req: BuildRequest) -> str | None:
    """The Dockerfile's text for the catalog. Read before the builder validates the
    request, so resolved inside the context (a ``../`` name or a link in the uploaded
    context must not make the host read one of its own files) and bounded."""
    try:
        with inroot.Root(req.context) as ctx:
            return ctx.read_bytes(req.dockerfile, 65536).decode(errors="replace")
    except OSError:
        return None
