"""Server start: make the records agree with the host again after a stop or a crash.

Two passes, both limited to what no live process is managing (``owner.py``):

1. **Records.** A ``running`` record whose container still runs is re-adopted as it
   is (sandboxes outlive the server). One whose container is gone is torn down and
   marked ``failed`` (``manager.refresh``: reason ``exited`` or ``oom_killed``). A
   ``pending`` record is a create the crash interrupted: its parts are torn down and
   it becomes ``failed`` (``startup_interrupted``). A ``suspending``/``snapshotting``
   record (a crash mid-capture) is settled from the host by ``memstate.recover``:
   running as it was, suspended if its image is complete, else ``failed``; a
   ``suspended`` one by ``memstate.recover_suspended`` (running if a resume got as far
   as restoring it, else suspended, without the resume's leftover CRIU daemon). A
   warm-pool sandbox of a dead server is destroyed: the new server's pool builds its own;
   so are the helpers of image jobs (pre-boot sandboxes, build networks).
2. **Leftovers.** Every host object named after a sandbox ID (runc container under our
   runc root, rootfs subvolume, ``cb-<id>`` netns, state dir, cgroup, egress policy
   chain or published policy) whose ID has no
   record, or only a final one, is torn down by ID. A create inserts its record before
   it makes the first part and a destroy finalises the record only after the last
   part is gone, so this never touches a live sandbox of another process. The scratch
   of a clone whose process died (``.clone-*`` in the pool, memory images on tmpfs) too.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from .. import _proc, ids
from ..errors import CellboxError
from ..network import firewall, netns, walls
from ..runtime import cgroups, checkpoint
from . import owner
from .records import SandboxRecord, Status, now_ms
from .lifecycle import SandboxManager
from .images import BUILD_NAMESPACE, IMAGES_NAMESPACE
from .warm import WARM_NAMESPACE

log = logging.getLogger(__name__)



@dataclass
class Report:
    adopted: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    reclaimed: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{len(self.adopted)} re-adopted, {len(self.failed)} marked failed, "
            f"{len(self.reclaimed)} leftovers removed, {len(self.errors)} errors"
        )


async def reconcile(manager: SandboxManager) -> Report:
    report = Report()
    states = await manager.runc.states()
    daemons = checkpoint.lazy_daemon_args() if states is not None else set()
    for rec in manager.store.list(live_only=True):
        if owner.is_alive(rec.owner):
            continue  # a live process (maybe this one) is managing it
        if states is not None and settled_suspended(manager.settings.sandboxes_dir, rec, states, daemons):
            report.adopted.append(rec.id)  # nothing of a resume was left: it stays as it is
            continue
        try:
            await _reconcile_record(manager, rec, report)
        except CellboxError as exc:
            report.errors.append(f"{rec.id}: {exc}")
            log.warning("reconcile: %s: %s", rec.id, exc)
    policy_chains = set(await firewall.chains(manager.settings.nft_table))
    for sid in sorted(await _host_objects(manager)):
        found = manager.store.get(sid)
        if found is not None and not found.status.is_final:
            continue
        try:
            await manager.teardown(sid)
            if sid in policy_chains:  # rules whose published policy file is gone too
                await firewall.remove_orphan(manager.settings.nft_table, sid)
            _remove_cgroups(sid)
            report.reclaimed.append(sid)
        except CellboxError as exc:
            report.errors.append(f"{sid}: {exc}")
            log.warning("reconcile: removing leftovers of %s: %s", sid, exc)
    await _remove_orphan_veths(manager)
    for veth in await walls.prune(manager.settings, lambda: {ids.host_veth(s) for s in manager.store.live_ids()}):
        log.info("reconcile: removed the walls of orphan port %s", veth)
    report.reclaimed.extend(await manager.memory.remove_clone_scratch())
    manager.egress.prune_links()
    log.info("reconcile: %s", report.summary())
    return report


def settled_suspended(sandboxes_dir: Path, rec: SandboxRecord, states: dict[str, str], daemons: set[str]) -> bool:
    """A suspended record no resume touched: no container (``states``: one ``runc
    list``), no lazy-pages daemon on its images (``daemons``: one walk of /proc), no
    restore work dir. ``memstate.recover_suspended`` would do nothing for it but ask
    ``runc state`` and walk /proc, ~30 minutes at 100,000 suspended records."""
    if rec.status != Status.SUSPENDED or ids.container(rec.id) in states:
        return False
    state_dir = sandboxes_dir / rec.id
    return str(state_dir / "suspend") not in daemons and next(state_dir.glob("restore-*"), None) is None


async def _reconcile_record(manager: SandboxManager, rec: SandboxRecord, report: Report) -> None:
    if rec.namespace in (WARM_NAMESPACE, IMAGES_NAMESPACE, BUILD_NAMESPACE):
        # A warm sandbox, or the helper of an image job (pre-boot sandbox, build network)
        # the crash interrupted: nobody will claim it.
        await manager.destroy(rec.id, rec.namespace, reason="pool_discarded")
        report.reclaimed.append(rec.id)
    elif rec.status == Status.PENDING:
        await manager.teardown(rec.id)
        rec.status = Status.FAILED
        rec.terminated_at = now_ms()
        rec.termination_reason = "startup_interrupted"
        rec.error = "the server stopped while the sandbox was being created"
        if manager.store.update_if(rec, Status.PENDING):
            report.failed.append(rec.id)
    elif rec.status == Status.RUNNING:
        rec = await manager.refresh(rec)
        (report.adopted if rec.status == Status.RUNNING else report.failed).append(rec.id)
    elif rec.status in (Status.SUSPENDING, Status.SNAPSHOTTING):  # a crash mid-capture
        rec = await manager.memory.recover(rec)
        (report.failed if rec.status == Status.FAILED else report.adopted).append(rec.id)
    else:  # suspended, or a resume the crash cut short (memstate.recover_suspended)
        await manager.memory.recover_suspended(rec)
        report.adopted.append(rec.id)


async def _host_objects(manager: SandboxManager) -> set[str]:
    """IDs that some host object of ours is named after."""
    found: set[str] = set(await manager.runc.list_ids())
    for base in (manager.settings.pool / "sandboxes", manager.settings.sandboxes_dir):
        if base.is_dir():
            found.update(p.name for p in base.iterdir())
    if netns.NETNS_DIR.is_dir():
        found.update(n[len(ids.NETNS_PREFIX):] for n in os.listdir(netns.NETNS_DIR) if n.startswith(ids.NETNS_PREFIX))
    found.update(p.name for p in cgroups.leftover_cgroups())
    found.update(manager.egress.published())
    found.update(await firewall.chains(manager.settings.nft_table))
    return {sid for sid in found if ids.is_id(sid)}


def _remove_cgroups(sandbox_id: str) -> None:
    """Empty per-sandbox cgroups runc did not remove (best effort: rmdir only)."""
    for path in cgroups.leftover_cgroups():
        if path.name == sandbox_id:
            try:
                path.rmdir()
            except OSError as exc:
                log.warning("reconcile: cannot remove cgroup %s: %s", path, exc)


async def _remove_orphan_veths(manager: SandboxManager) -> None:
    """Veths on our bridge named like a sandbox's (``cb`` + 13 ID characters) that no
    live record owns: the netns normally takes its veth along; this catches the rest.
    Devices are listed before records, as a create records itself before its veth."""
    net = Path("/sys/class/net")
    candidates = [
        n for n in os.listdir(net)
        if n.startswith(ids.VETH_PREFIX) and len(n) == 15 and (net / n / "master").resolve().name == manager.settings.bridge
    ]
    owned = {ids.host_veth(s) for s in manager.store.live_ids()}
    for name in candidates:
        if name not in owned:
            log.info("reconcile: removing orphan veth %s", name)
            await _proc.run(["ip", "link", "del", name], check=False)
