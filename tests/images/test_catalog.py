"""Named images: register a snapshot under a name, pre-booted images (create = restore),
list/describe, and remove refused while in use."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from cellbox.errors import CellboxError, Conflict, NotFound
from cellbox.images.build import BuildRequest
from cellbox.manager.snapshot_store import SnapshotType

from .conftest import Images, write_context


def test_register_filesystem_snapshot(images: Images, sandboxes) -> None:
    src = sandboxes.create()
    sandboxes.sh(src, "mkdir -p /srv && echo registered > /srv/marker")
    snap = images.lt.run(images.manager.memory.snapshot(src.id, src.namespace, SnapshotType.FILESYSTEM))
    images.snapshots.append(snap.id)
    name = images.track(f"test/reg-{secrets.token_hex(4)}")
    info = images.lt.run(images.im.register(name, snap.id))
    assert info.kind == "snapshot" and info.source == "register" and not info.prebooted
    # The image has its own copy: the snapshot can go, the image stays whole.
    images.lt.run(images.manager.memory.delete_snapshot(snap.id))
    sandboxes.destroy(src)

    rec = sandboxes.create(image=name, cpus=0.5, memory_mb=256)
    assert rec.image == f"{name}:latest" and rec.cpus == 0.5 and rec.memory_mb == 256
    assert sandboxes.sh(rec, "cat /srv/marker")["out"].strip() == "registered"
    assert f"{name}:latest" in [i.name for i in images.im.list()]
    assert images.im.describe(name).in_use == 1

    with pytest.raises(Conflict) as err:
        images.lt.run(images.im.remove(name))
    assert err.value.code == "IMAGE_IN_USE"
    sandboxes.destroy(rec)
    images.lt.run(images.im.remove(name))
    with pytest.raises(NotFound):
        images.im.describe(name)
    with pytest.raises(NotFound):  # the image's copy of the snapshot is gone with it
        images.manager.memory.get_snapshot(info.snapshot_id or "")


def test_prebooted_image_restores_warm_state(images: Images, sandboxes, tmp_path: Path) -> None:
    token = secrets.token_hex(4)
    ctx = write_context(tmp_path / "ctx", f"""
        FROM cellbox/debian
        ENV WARM_TOKEN={token}
        RUN echo baked > /baked.txt
    """)
    name = images.track(f"test/preboot-{token}")
    # The warm-up leaves a process running, with state only in memory (a shell variable).
    warmup = ["sh", "-c", "setsid sh -c 'x=$WARM_TOKEN; while :; do sleep 1; done' </dev/null >/dev/null 2>&1 & "
                          "echo warmed > /tmp/warm.txt"]
    lines: list[str] = []
    info = images.lt.run(images.im.build(BuildRequest(name=name, context=ctx), lines.append, warmup=warmup),
                         timeout=600)
    assert info.prebooted and info.warmup == warmup
    assert any("pre-booted" in line for line in lines)

    rec = sandboxes.create(image=name, cpus=0.5, memory_mb=512)
    assert rec.extra["from_image"]["restored"] is True
    out = sandboxes.sh(rec, "cat /tmp/warm.txt /baked.txt; pgrep -f 'while :' >/dev/null && echo loop-running; "
                            "hostname; cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null "
                            "|| cat /sys/fs/cgroup/memory.max")
    assert out["stdout"][:4] == ["warmed", "baked", "loop-running", rec.id], out
    assert int(out["stdout"][4]) == 512 << 20

    # Two sandboxes from one pre-booted image are independent.
    rec2 = sandboxes.create(image=name)
    sandboxes.sh(rec2, "echo other > /tmp/warm.txt")
    assert sandboxes.sh(rec, "cat /tmp/warm.txt")["out"].strip() == "warmed"
    assert rec2.ip != rec.ip


def test_preboot_without_warmup_boots_by_default(images: Images, sandboxes, tmp_path: Path) -> None:
    """A plain boot measured faster than a restore: with nothing in memory worth
    keeping, a pre-booted image still boots (``CELLBOX_PREBOOT_RESTORE=auto``)."""
    token = secrets.token_hex(4)
    ctx = write_context(tmp_path / "ctx", f"FROM cellbox/debian\nRUN echo {token} > /t\n")
    name = images.track(f"test/preboot-plain-{token}")
    info = images.lt.run(images.im.build(BuildRequest(name=name, context=ctx), lambda _: None, preboot=True),
                         timeout=600)
    assert info.prebooted and not info.warmup
    rec = sandboxes.create(image=name)
    assert rec.extra["from_image"]["restored"] is False
    assert sandboxes.sh(rec, "cat /t")["out"].strip() == token


def test_register_memory_snapshot_is_prebooted(images: Images, sandboxes) -> None:
    src = sandboxes.create()
    sandboxes.sh(src, "echo from-memory-snapshot > /tmp/m")
    snap = images.lt.run(images.manager.memory.snapshot(src.id, src.namespace, SnapshotType.MEMORY))
    images.snapshots.append(snap.id)
    name = images.track(f"test/regmem-{secrets.token_hex(4)}")
    info = images.lt.run(images.im.register(name, snap.id))
    assert info.prebooted and info.kind == "snapshot"
    rec = sandboxes.create(image=name)
    assert rec.extra["from_image"]["restored"] is True
    assert sandboxes.sh(rec, "cat /tmp/m")["out"].strip() == "from-memory-snapshot"


def test_catalog_refusals(images: Images, manager) -> None:
    default = manager.settings.default_image
    with pytest.raises(Conflict) as err:
        images.lt.run(images.im.remove(default))
    assert err.value.code == "IMAGE_PROTECTED"
    assert images.im.describe(default).source == "local"
    with pytest.raises(NotFound):
        images.lt.run(images.im.remove("test/never-existed"))
    with pytest.raises(NotFound):
        images.lt.run(images.im.register("test/x", "nosuchsnapshot000000"))
    with pytest.raises(CellboxError) as err2:
        images.lt.run(images.im.register("Not Valid", "nosuchsnapshot000000"))
    assert err2.value.status == 400


def test_warm_pool_of_an_image(images: Images, sandboxes, tmp_path: Path) -> None:
    import time

    token = secrets.token_hex(4)
    ctx = write_context(tmp_path / "ctx", f"FROM cellbox/debian\nRUN echo {token} > /warm.txt\n")
    name = images.track(f"test/warm-{token}")
    images.lt.run(images.im.build(BuildRequest(name=name, context=ctx), lambda _: None), timeout=600)
    with pytest.raises(CellboxError) as err:
        images.lt.run(images.im.set_warm_pool(name, 99))
    assert err.value.status == 400
    info = images.lt.run(images.im.set_warm_pool(name, 1))
    assert info.warm_pool == 1
    deadline = time.monotonic() + 60
    while images.im.describe(name).warm_ready < 1:
        assert time.monotonic() < deadline, "the image's warm pool did not fill"
        time.sleep(0.1)

    rec = sandboxes.create(image=name, cpus=0.5, memory_mb=256, name=f"warm-{token}")
    assert rec.extra.get("warm") is True and rec.image == f"{name}:latest" and rec.namespace == "default"
    assert rec.cpus == 0.5 and rec.memory_mb == 256 and rec.name == f"warm-{token}"
    assert sandboxes.sh(rec, "cat /warm.txt")["out"].strip() == token
    assert images.im.describe(name).in_use == 1  # the claimed one; ready ones are not users
    with pytest.raises(Conflict):
        images.lt.run(images.im.remove(name))
    sandboxes.destroy(rec)
    images.lt.run(images.im.remove(name), timeout=120)  # closes the pool: nothing left running
    from cellbox.manager.warm import WARM_NAMESPACE

    assert not [r for r in images.manager.store.list(WARM_NAMESPACE, live_only=True) if r.image == f"{name}:latest"]
