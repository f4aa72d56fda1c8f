"""A pool of pre-booted sandboxes of the default image, handed out on create.

Why: a cold create costs ~10 ms of storage and network set-up, ~45 ms of ``runc run``
and ~50-70 ms until the agent's Python is up; the hosted leaders do not boot on the
hot path either. A warm sandbox is complete and running; claiming one only applies
the request's limits and rewrites its record, without starting any process (cgroup
files, ``config.json`` and the qgroup ioctl: well under a millisecond; ``runc state`` +
``runc update`` + ``btrfs qgroup limit`` cost ~35 ms of process start per claim).
Its ID, hostname, netns and rootfs were all made for it, so the "one ID keys
everything" rule holds. bench/start.py measures both paths side by side.

Warm sandboxes are records in the reserved namespace ``WARM_NAMESPACE``, invisible to
listings; the pool refills in the background, one build at a time, at the lowest CPU
weight (cgroup ``cpu.shares`` 2 while the agent boots, nice 19 for the page-cache
pre-read), so a refill takes only CPU the sandboxes in use leave idle; a claim
restores the default weight. During a burst (``BURST_CLAIMS`` claims within
``BURST_WINDOW``) a refill also waits until claims have paused for ``REFILL_QUIET``
and the CPUs are half idle (or a second has passed). They are torn down when the manager stops (they are
cheap to rebuild, and a restart may bring new code).
"""

from __future__ import annotations

import asyncio
import collections
import fnmatch
import glob
import logging
import os
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .. import _procfs, ids
from ..runtime import bundle
from ..storage import inroot
from .records import SandboxRecord, now_ms
from .spec import CreateSpec
from .tasks import TaskSet

if TYPE_CHECKING:
    from .warm_sizing import WarmSizer

# What a pool is given instead of a manager (it imports nothing above it): how to build
# one sandbox, how to destroy one, where a sandbox's rootfs is (for the pre-read).
Build = Callable[[CreateSpec], Awaitable[SandboxRecord]]
Destroy = Callable[[SandboxRecord, str], Awaitable[None]]
ApplyLimits = Callable[[SandboxRecord, CreateSpec, int], None]
Discard = Callable[[SandboxRecord], Awaitable[None]]

log = logging.getLogger(__name__)
WARM_NAMESPACE = "__warm__"
BURST_WINDOW, BURST_CLAIMS = 0.25, 4  # this many claims this close together are a burst
REFILL_QUIET = 0.25  # in a burst: seconds without a claim before the pool starts rebuilding
REFILL_IDLE = 0.5  # ... and the host's CPUs at least this idle over a short window
REFILL_MAX_WAIT = 1.0  # ... or this long waited for idle CPU (a busy host still refills)
IDLE_WINDOW = 0.1
CLAIMS_RECENT = 5.0  # the idle test applies this long after a claim (not to the first fill)
# A build that grows a sized pool beyond its floor waits for half-idle CPUs until this
# long after the last claim (or miss): a burst that found the pool empty is still
# booting its cold sandboxes long after its last request arrived, and the growth must
# not compete with it. Per build (an earlier try) it let a host loaded by others grow
# the pool by one sandbox per 15 s: the next burst found it nearly empty.
GROW_MAX_WAIT = 15.0
GROW_AFTER_COLD = 1.0  # with a cold-gate signal (``cold_busy``): wait for idle CPUs this long once it is idle
BUILD_PARALLEL = max(1, os.cpu_count() or 1)  # refill builds at once (the build slot)
RESIZE_EVERY = 5.0  # seconds between checks of a sized pool's target (grow after a burst, shrink when idle)
# Files a first command is likely to read, pre-read into a warm sandbox's page cache.
# Why: btrfs snapshots share data blocks but not inodes, so each sandbox has its own
# page cache; the first `node -v` in a fresh snapshot took ~136 ms, the next ones 47.
PREFAULT = (
    "usr/bin/node", "usr/lib/x86_64-linux-gnu/libnode.so*", "usr/lib/x86_64-linux-gnu/libicu*.so*",
    "usr/lib/x86_64-linux-gnu/libuv.so*", "usr/lib/x86_64-linux-gnu/libstdc++.so*",
    "usr/lib/x86_64-linux-gnu/libcrypto.so*", "usr/lib/x86_64-linux-gnu/libssl.so*",
    "usr/lib/x86_64-linux-gnu/libz.so*", "usr/lib/x86_64-linux-gnu/libbrotli*.so*",
    "usr/lib/x86_64-linux-gnu/libcares.so*", "usr/lib/x86_64-linux-gnu/libnghttp2.so*",
    "usr/lib/x86_64-linux-gnu/libc.so*", "usr/lib/x86_64-linux-gnu/libm.so*", "usr/lib/x86_64-linux-gnu/libgcc_s.so*",
    "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so*", "usr/bin/python3.11", "usr/bin/bash", "usr/bin/sh", "usr/bin/dash",
)


def _at_low_priority(fn: Callable[[Path], int], arg: Path) -> int:
    """Run ``fn`` in this (worker) thread at nice 19, then back: the pre-read is a
    background chore and must not take CPU from sandboxes in use."""
    tid = threading.get_native_id()
    old = os.getpriority(os.PRIO_PROCESS, tid)
    os.setpriority(os.PRIO_PROCESS, tid, 19)
    try:
        return fn(arg)
    finally:
        os.setpriority(os.PRIO_PROCESS, tid, old)


def prefault(root: Path) -> int:
    """Read the usual first-command files of a sandbox's rootfs (from the host side,
    which shares the sandbox's inodes); returns the bytes read.

    The tree can be a tenant's (a pool of an image registered from a snapshot), so
    paths resolve inside it and only regular files are opened (``inroot``): before,
    ``/usr/bin/node`` linked to a host file made the host read that file, and a FIFO
    where a library was expected blocked the pool's refill for good."""
    total = 0
    with inroot.Root(root) as tree:
        for pattern in PREFAULT:
            parent, _, leaf = pattern.rpartition("/")
            try:
                names = fnmatch.filter(tree.listdir(parent), leaf) if glob.has_magic(leaf) else [leaf]
            except OSError:
                continue
            for name in sorted(names):
                try:
                    fd = tree.open_regular(f"{parent}/{name}")
                except OSError:
                    continue
                try:
                    while chunk := os.read(fd, 1 << 20):
                        total += len(chunk)
                except OSError:
                    pass
                finally:
                    os.close(fd)
    return total


class WarmPool:
    """Pre-booted sandboxes of the default image, or of a named image (``image``: its
    canonical name; built like any create of it, so a pre-booted image's pool holds
    restored sandboxes).

    ``build`` makes one sandbox from a spec, ``destroy`` removes one (with a reason),
    ``rootfs`` names a sandbox's rootfs: callables, so the pool's rules (burst, quiet,
    refill, claim) are tested with fakes (``tests/unit/manager/test_warm.py``)."""

    def __init__(self, size: int, *, build: Build, destroy: Destroy, rootfs: Callable[[str], Path],
                 image: str | None = None, preread: Callable[[Path], Awaitable[object]] | None = None,
                 sizer: "WarmSizer | None" = None, cold_busy: Callable[[], bool] | None = None) -> None:
        self.sizer = sizer  # speed (issue 15): demand-driven size; None = fixed ``size``
        self._cold_busy = cold_busy  # whether cold creates are in flight or queued (manager/cold_gate.py)
        self._resizer: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()
        self._build = build
        self._destroy = destroy
        self._rootfs = rootfs
        self._preread = preread or _preread
        self.size = size
        self.image = image
        self._ready: list[SandboxRecord] = []
        # Set while a sandbox is ready: creates queued at the cold gate wake on it and
        # take that one instead of booting their own (manager/cold_gate.py).
        self.has_ready = asyncio.Event()
        self._building = 0
        self._slotted = 0  # builds past the build slot (at most ``_build_slot``'s value)
        self._tasks = TaskSet("warm-pool build")
        self._closed = False
        # Refills are built a few at a time (one per CPU: a build waits on runc, btrfs
        # and its agent part of the time): a burst of claims would otherwise start as
        # many cold builds at once, and they would compete with the burst for the CPU.
        # One at a time (before issue 15's cold path) a grown pool refilled at ~2-3
        # sandboxes/s on a loaded host: 100 took longer than the 45 s between bursts.
        self._build_slot = asyncio.Semaphore(BUILD_PARALLEL)
        # ... and not while claims are coming in: a build costs ~150 ms of CPU (runc, the
        # agent's Python start) that the burst being served needs more.
        self._last_claim = float("-inf")  # loop time of the last claim
        self._recent_claims: collections.deque[float] = collections.deque()

    @property
    def ready(self) -> int:
        return len(self._ready)

    def target(self) -> int:
        return self.sizer.target() if self.sizer is not None else self.size

    def fill(self) -> None:
        """Start building sandboxes until ready + building reaches the pool size."""
        if self.sizer is not None and self._resizer is None and not self._closed:
            self._resizer = self._tasks.spawn(self._follow_target())
        while not self._closed and len(self._ready) + self._building < self.target():
            self._building += 1
            self._tasks.spawn(self._build_one())

    def _claimed(self) -> None:
        now = asyncio.get_running_loop().time()
        self._last_claim = now
        self._recent_claims.append(now)
        self.fill()

    def _bursting(self) -> bool:
        """Claims are arriving faster than one caller creating sandboxes one at a time
        can make them: the refill should wait and leave the CPUs to the burst.

        Without this test a sequential user (create, run, delete, repeat) never left
        the pool ``REFILL_QUIET`` of quiet, the pool stayed empty, and every create was
        cold: sequential TTI p50 162 ms instead of ~70 (``bench/tti.py --warm-pool 2``).
        """
        horizon = asyncio.get_running_loop().time() - BURST_WINDOW
        while self._recent_claims and self._recent_claims[0] < horizon:
            self._recent_claims.popleft()
        return len(self._recent_claims) >= BURST_CLAIMS

    async def _quiet(self) -> None:
        """Return once no sandbox has been claimed for ``REFILL_QUIET`` seconds and the
        CPUs are idle enough (the sandboxes just claimed are usually still busy with
        their first command), or ``REFILL_MAX_WAIT`` seconds were spent waiting for it."""
        loop = asyncio.get_running_loop()
        if self._growing():  # speed: growth waits for idle CPUs, until GROW_MAX_WAIT after the last claim
            if self._cold_busy is not None:
                # ... or, told when the host's cold creates are done (the burst is served),
                # until shortly after that: growth then has the gap before the next burst.
                while not self._closed and self._cold_busy():
                    await asyncio.sleep(IDLE_WINDOW)
                await self._idle_cpus(loop.time() + GROW_AFTER_COLD)
                return
            await self._idle_cpus(self._last_claim + GROW_MAX_WAIT)
            return
        if not self._bursting():
            return  # the build runs at the lowest CPU weight: it only takes idle CPU
        while not self._closed and (wait := self._last_claim + REFILL_QUIET - loop.time()) > 0:
            await asyncio.sleep(wait)
        if loop.time() - self._last_claim > CLAIMS_RECENT:
            return  # nothing claimed lately: whatever is busy is not ours to make way for
        await self._idle_cpus(loop.time() + REFILL_MAX_WAIT)

    def _growing(self) -> bool:
        """Whether this build takes a sized pool beyond its fixed floor."""
        # The builds holding a build slot (this one included) are the next to be ready:
        # growth if the ready ones plus them exceed the floor.
        return self.sizer is not None and len(self._ready) + self._slotted > self.size

    async def _idle_cpus(self, give_up: float) -> None:
        """Return when the CPUs were half idle over ``IDLE_WINDOW``, or at loop time ``give_up``."""
        loop = asyncio.get_running_loop()
        while not self._closed and loop.time() < give_up:
            before = _cpu_times()
            await asyncio.sleep(IDLE_WINDOW)
            idle, total = (a - b for a, b in zip(_cpu_times(), before))
            if total <= 0 or idle / total >= REFILL_IDLE:
                return

    async def _build_one(self) -> None:
        # Counted as building until it is ready (or given up): decremented before the
        # pre-read, a sandbox was in neither count for its ~50 ms and ``fill`` started
        # one build too many (tests/integration/test_warm_sizing.py saw ready + building
        # exceed the target).
        try:
            rec = await self._build_slotted()
            if rec is None:
                return
            if self._closed:
                await self._destroy(rec, "pool_closed")
                return
            await self._preread(self._rootfs(rec.id))
            self._ready.append(rec)
            self.has_ready.set()
        finally:
            self._building -= 1

    async def _build_slotted(self) -> SandboxRecord | None:
        try:
            async with self._build_slot:
                self._slotted += 1
                try:
                    await self._quiet()
                    if self._closed:
                        return None
                    spec = CreateSpec(namespace=WARM_NAMESPACE, cpus=float(_host_cpus()),
                                      cpu_shares=bundle.MIN_SHARES, image=self.image)
                    return await self._build(spec)
                finally:
                    self._slotted -= 1
        except Exception as exc:  # noqa: BLE001 - a failed warm build only means a cold create later
            log.warning("warm pool: building a sandbox failed: %s", exc)
            return None

    def _pop(self, index: int = -1) -> SandboxRecord:
        rec = self._ready.pop(index)
        if not self._ready:
            self.has_ready.clear()
        return rec

    def fits(self, spec: CreateSpec) -> bool:
        """Whether a sandbox of this pool can serve ``spec`` (image and /dev/shm size)."""
        return spec.memory_mb >= bundle.SHM_FULL_AT_MB and spec.image == self.image

    def can_serve(self, spec: CreateSpec) -> bool:
        # Warm sandboxes booted with the pool's memory, so their /dev/shm has its full
        # size; a smaller sandbox must boot with a /dev/shm sized to its memory_mb
        # (bundle.shm_kib): tmpfs must never be able to fill its memory limit.
        if spec.memory_mb < bundle.SHM_FULL_AT_MB:
            return False
        ours = spec.image == self.image
        if ours and self.sizer is not None:  # speed: every create this pool could serve is demand
            self.sizer.observe()
            if not self._ready:
                # A miss counts as a claim for the burst test too: else a burst that
                # finds the pool empty sees no claims and the grown pool's refills
                # compete with it (first burst of 100, one run: 69 % -> 31 % success).
                self._claimed()
        return ours and bool(self._ready)

    @property
    def image_mb(self) -> int:
        return int(self._ready[-1].extra.get("image_mb", 0)) if self._ready else 0

    async def claim(self, spec: CreateSpec, disk_mb: int, apply_limits: ApplyLimits,
                    discard: Discard) -> SandboxRecord | None:
        """Hand out a warm sandbox shaped to ``spec``, or None if none fits.

        No process is started here: liveness is read from /proc, limits are written
        by ``apply_limits`` (cgroup files, the bundle and the subvolume's qgroup). A
        sandbox found dead goes to ``discard``; one whose limits fail is destroyed.
        """
        while self._ready:
            rec = self._pop()
            self._claimed()
            if not _procfs.in_cgroup(rec.init_pid, ids.cgroup_path(rec.id)):
                await discard(rec)  # dead, or its PID recycled into another cgroup
                continue
            try:
                apply_limits(rec, spec, disk_mb)
            except Exception as exc:  # noqa: BLE001 - fall back to a cold create
                log.warning("warm pool: applying limits to %s failed: %s", rec.id, exc)
                await self._destroy(rec, "pool_error")
                continue
            rec.namespace, rec.name = spec.namespace, spec.name
            rec.cpus, rec.memory_mb, rec.disk_mb, rec.pids_limit = spec.cpus, spec.memory_mb, disk_mb, spec.pids_limit
            rec.timeout_secs = spec.timeout_secs
            rec.created_at = now_ms()
            rec.extra["warm"] = True
            return rec
        return None

    async def trim(self) -> None:
        """Destroy ready sandboxes above the target (the sizer shrank it: idle)."""
        while len(self._ready) > self.target() and not self._closed:
            rec = self._pop(0)  # the oldest first
            await self._destroy(rec, "pool_shrunk")

    async def _follow_target(self) -> None:
        """Follow a sized pool's target as time passes: it grows while claims are served
        and shrinks with no claims at all, so it cannot be followed from claims alone.
        Woken by ``close``, never cancelled: a cancel could cut a destroy in half."""
        while not self._closed:
            try:
                await asyncio.wait_for(self._closing.wait(), RESIZE_EVERY)
                return
            except asyncio.TimeoutError:
                pass
            try:
                self.fill()
                await self.trim()
            except Exception as exc:  # noqa: BLE001 - a failed resize leaves the pool as is
                log.warning("warm pool: resizing failed: %s", exc)

    async def close(self) -> None:
        self._closed = True
        self._closing.set()
        await self._tasks.settle()
        while self._ready:
            rec = self._ready.pop()
            try:
                await self._destroy(rec, "pool_closed")
            except Exception as exc:  # noqa: BLE001
                log.warning("warm pool: destroying %s failed: %s", rec.id, exc)


async def _preread(root: Path) -> int:
    return await asyncio.to_thread(_at_low_priority, prefault, root)


def _cpu_times() -> tuple[int, int]:
    """(idle + iowait, total) jiffies of all CPUs, from the first line of /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return fields[3] + fields[4], sum(fields[:8])


def _host_cpus() -> int:
    return os.cpu_count() or 1
