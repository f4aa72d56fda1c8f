"""Malicious images, pulled from a real registry on loopback: each hostile layer is
made here with ``tarfile`` on top of the default image's layers, pushed with skopeo,
and pulled through the image manager as any client's pull would be.

Judged from the host: a host file the layer aims at is never created, changed or
linked, nothing of a refused image stays in the store, and an image that is accepted
gives a sandbox nothing beyond its walls (setuid and file capabilities under
``noNewPrivileges``). Refusals come from ``storage/layer_scan.py`` (headers, before any
write) and ``unpack.check_tree`` (the finished tree), as 422 ``IMAGE_REFUSED``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import secrets
import shutil
import socket
import subprocess
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from cellbox.errors import CellboxError
from cellbox.images.build import BuildRequest

from ..images import registry as registry_mod
from ..images.conftest import Images, images, prune_build_cache_at_end, registry  # noqa: F401 - fixtures

pytestmark = pytest.mark.root

LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
LAYER_GZ = "application/vnd.oci.image.layer.v1.tar+gzip"


@dataclass
class Host:
    """Host-only paths a hostile layer aims at."""

    dir: Path  # a directory only the host has
    victim: Path  # a file in it, with a secret


@pytest.fixture
def host(tmp_path: Path) -> Host:
    d = tmp_path / "host-only"
    d.mkdir()
    victim = d / "victim"
    victim.write_text(secrets.token_hex(16))
    return Host(d, victim)


def _entry(name: str, kind: str = "file", data: bytes = b"", **attrs: object) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
                 "hardlink": tarfile.LNKTYPE, "chr": tarfile.CHRTYPE, "blk": tarfile.BLKTYPE}[kind]
    info.mode = 0o755 if kind == "dir" else 0o644
    info.size = len(data) if kind == "file" else 0
    for key, value in attrs.items():
        setattr(info, key, value)
    return info, data


def _tar(entries: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


def push_hostile(images: Images, registry: registry_mod.Registry, tmp_path: Path,
                 layers: list[tuple[bytes, str]], *, base_image: bool = True) -> str:
    """An image of the default image's layers (or none: ``base_image=False``, for
    images that are never started) plus ``layers`` ((blob, media type)), pushed to the
    loopback registry; returns its reference (tracked for cleanup)."""
    store = images.manager.images
    base = store.manifest(store.refs()["cellbox/debian:latest"])
    config = store.image_config(base)
    if not base_image:
        base = dict(base, layers=[])
        config = dict(config, rootfs={"type": "layers", "diff_ids": []})
    layout = tmp_path / f"layout-{secrets.token_hex(3)}"
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> dict[str, object]:
        hexd = hashlib.sha256(data).hexdigest()
        (blobs / hexd).write_bytes(data)
        return {"digest": f"sha256:{hexd}", "size": len(data)}

    for layer in base["layers"]:
        src = store._blob_path(layer["digest"])
        try:
            os.link(src, blobs / src.name)
        except OSError:
            shutil.copy(src, blobs / src.name)
    manifest_layers = list(base["layers"])
    diff_ids = list(config["rootfs"]["diff_ids"])
    for blob, media in layers:
        manifest_layers.append({"mediaType": media, **put(blob)})
        plain = gzip.decompress(blob) if media == LAYER_GZ else blob
        diff_ids.append("sha256:" + hashlib.sha256(plain).hexdigest())
    config = dict(config, rootfs={"type": "layers", "diff_ids": diff_ids},
                  history=[{"created_by": "hostile"} for _ in diff_ids])
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                           **put(json.dumps(config).encode())},
                "layers": manifest_layers}
    m = put(json.dumps(manifest).encode())
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": manifest["mediaType"], **m, "annotations": {"org.opencontainers.image.ref.name": "x"}}]}))
    repo = f"cellbox-test/hostile-{secrets.token_hex(4)}"
    # As registry.push, with the fastest gzip: skopeo compresses plain layers for a
    # registry, and the default image's 292 MiB layer at the default level costs ~30 s.
    digest_file = tmp_path / f"digest-{secrets.token_hex(3)}"
    subprocess.run(
        ["skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--dest-compress-level", "1",
         "--dest-creds", f"{registry_mod.USER}:{registry_mod.PASSWORD}", "--digestfile", str(digest_file),
         f"oci:{layout}:x", f"docker://{registry.host}/{repo}:v1"],
        check=True, capture_output=True, timeout=600,
    )
    shutil.rmtree(layout)
    ref = f"{registry.host}/{repo}:v1"
    PUSHED[ref] = digest_file.read_text().strip()
    return images.track(ref)


PUSHED: dict[str, str] = {}  # reference -> manifest digest, as pushed


def _pull(images: Images, ref: str) -> CellboxError | None:
    """Pull ``ref``; the error it met, or None if it was accepted."""
    try:
        images.lt.run(images.im.pull(ref, username=registry_mod.USER, password=registry_mod.PASSWORD), timeout=600)
    except CellboxError as exc:
        return exc
    return None


def _assert_refused(images: Images, ref: str, err: CellboxError | None, *words: str) -> None:
    assert err is not None, f"{ref} was accepted"
    assert err.status == 422 and err.code == "IMAGE_REFUSED", err
    for word in words:
        assert word in str(err), err
    assert ref not in images.manager.images.refs(), "a refused image is still named"
    # Its half-unpacked subvolume is gone (only this image's: other unpacks may be under way).
    tmp = images.manager.images.unpacked / (".tmp-" + PUSHED[ref].split(":", 1)[1])
    assert not os.path.lexists(tmp), f"a half-unpacked image was left in the pool: {tmp}"


# -- links and whiteouts out of the root ---------------------------------------------------


def _refused_layers(host: Host) -> dict[str, tuple[list[bytes], tuple[str, ...]]]:
    """name -> (layers, words the refusal must name)."""
    rel = "../" * 12 + str(host.victim).lstrip("/")
    return {
        "symlink then write through it": (
            [_tar([_entry("escape", "symlink", linkname=str(host.dir))]),
             _tar([_entry("escape/pwned", data=b"x")])], ("could not be unpacked",)),
        "hard link to an absolute host path": (
            [_tar([_entry("hl", "hardlink", linkname=str(host.victim))])], ("could not be unpacked",)),
        "hard link climbing with ..": ([_tar([_entry("hl", "hardlink", linkname=rel)])], ("'..'",)),
        "whiteout climbing with ..": ([_tar([_entry("../../../../" + str(host.dir).lstrip("/") + "/.wh.victim")])],
                                      ("'..'",)),
        "owner above 65535": ([_tar([_entry("big-uid", data=b"x", uid=70000, gid=0)])], ("70000",)),
        "symlinked /proc": ([_tar([_entry(".wh.proc"), _entry("proc", "symlink", linkname="/")])], ("/proc",)),
        "symlinked /dev": ([_tar([_entry(".wh.dev"), _entry("dev", "symlink", linkname="/tmp")])], ("/dev",)),
        "symlinked /sys": ([_tar([_entry(".wh.sys"), _entry("sys", "symlink", linkname="/")])], ("/sys",)),
        "symlinked /.cellbox": ([_tar([_entry(".wh..cellbox"), _entry(".cellbox", "symlink", linkname="/etc")])],
                                ("/.cellbox",)),
        "symlinked /etc (the host writes identity files there)": (
            [_tar([_entry(".wh.etc"), _entry("etc", "symlink", linkname=str(host.dir))])], ("/etc",)),
    }


REFUSED = list(_refused_layers(Host(Path("/x"), Path("/x/v"))))


@pytest.mark.parametrize("case", REFUSED)
def test_hostile_layer_is_refused_and_host_untouched(images: Images, registry: registry_mod.Registry, sandboxes,
                                                     tmp_path: Path, host: Host, case: str) -> None:
    layers, words = _refused_layers(host)[case]
    secret, nlink = host.victim.read_text(), os.stat(host.victim).st_nlink
    ref = push_hostile(images, registry, tmp_path, [(blob, LAYER_TAR) for blob in layers], base_image=False)
    err = _pull(images, ref)
    if err is None:  # accepted (the code before the fix): a sandbox is where it would hurt
        try:
            sandboxes.create(image=ref)
        except CellboxError:
            pass
    # From the host: nothing written, linked or removed where the layer aimed.
    assert sorted(p.name for p in host.dir.iterdir()) == ["victim"], "a layer wrote into a host directory"
    assert host.victim.read_text() == secret and os.stat(host.victim).st_nlink == nlink
    _assert_refused(images, ref, err, *words)


def test_links_pointing_out_are_harmless_inside(images: Images, registry: registry_mod.Registry, sandboxes,
                                                tmp_path: Path, host: Host) -> None:
    """Symlinks out of the root (absolute and ``../``) are ordinary in images: kept, and
    inside a sandbox they resolve in its own root. A whiteout behind a symlink to a
    host path removes nothing of the host; a resolv.conf symlinked to a host file is
    replaced by a plain file, and the host file is untouched."""
    secret = host.victim.read_text()
    layers = [
        _tar([_entry("abs", "symlink", linkname="/"), _entry("rel", "symlink", linkname="../../../.."),
              _entry("hostdir", "symlink", linkname=str(host.dir))]),
        _tar([_entry("hostdir/.wh.victim"), _entry("etc/.wh.resolv.conf")]),
        _tar([_entry("etc/resolv.conf", "symlink", linkname=str(host.victim))]),
    ]
    ref = push_hostile(images, registry, tmp_path, [(blob, LAYER_TAR) for blob in layers])
    assert _pull(images, ref) is None
    rec = sandboxes.create(image=ref)
    out = sandboxes.sh(rec, "readlink /abs /rel; cat /abs/etc/hostname /rel/etc/hostname; "
                            "test -L /etc/resolv.conf && echo link; grep -c nameserver /etc/resolv.conf; "
                            f"cat {host.victim} 2>&1 | head -1")
    assert out["stdout"][:2] == ["/", "../../../.."], out
    assert out["stdout"][2] == out["stdout"][3] != socket.gethostname(), out  # the sandbox's own /etc
    assert "link" not in out["stdout"] and "1" in out["stdout"], out
    assert secret not in out["out"], "the sandbox read a host file through an image symlink"
    assert host.victim.read_text() == secret and sorted(p.name for p in host.dir.iterdir()) == ["victim"]


def test_device_nodes_are_not_unpacked(images: Images, registry: registry_mod.Registry, sandboxes,
                                       tmp_path: Path) -> None:
    """``/dev/mem`` (1,1) and the host's root disk as device nodes in a layer: the image is
    accepted (debootstrap-made images ship ``/dev/console`` & co.) but no device node
    reaches the unpacked tree, so neither a sandbox nor host code opening a file there
    meets one (inside a sandbox runc's devices cgroup would deny them too)."""
    disk = os.stat("/").st_dev
    layer = _tar([_entry("mem", "chr", devmajor=1, devminor=1), _entry("opt/dir/disk", "blk",
                  devmajor=os.major(disk), devminor=os.minor(disk)), _entry("opt/dir/kept", data=b"ok")])
    ref = push_hostile(images, registry, tmp_path, [(layer, LAYER_TAR)])
    assert _pull(images, ref) is None
    store = images.manager.images
    tree = store.unpacked / store.refs()[ref].split(":", 1)[1]
    found = [str(p) for p in (tree / "mem", tree / "opt/dir/disk") if os.path.lexists(p)]
    assert not found, f"device nodes unpacked into the image: {found}"
    assert (tree / "opt/dir/kept").read_text() == "ok"
    rec = sandboxes.create(image=ref)
    out = sandboxes.sh(rec, "ls /mem /opt/dir/disk 2>&1; head -c1 /dev/vda 2>&1 | head -1; cat /opt/dir/kept")
    assert out["stdout"][-1] == "ok" and "No such file" in out["out"], out


# -- setuid files and file capabilities ------------------------------------------------------

# vfs_cap_data v2 (linux/capability.h): magic 0x02000000 | effective, permitted = CAP_DAC_READ_SEARCH.
_CAP_DAC_READ_SEARCH = (0x02000001).to_bytes(4, "little") + (1 << 2).to_bytes(4, "little") + bytes(12)


def test_setuid_and_file_caps_gain_nothing(images: Images, registry: registry_mod.Registry, sandboxes,
                                           tmp_path: Path) -> None:
    """A setuid-root ``id`` and a ``cat`` with CAP_DAC_READ_SEARCH in its file
    capabilities: run by an unprivileged user in the sandbox, neither gains anything
    (``noNewPrivileges``)."""
    id_bin, cat_bin = Path("/usr/bin/id").read_bytes(), Path("/usr/bin/cat").read_bytes()
    caps = _entry("usr/local/bin/capcat", data=cat_bin, mode=0o755)
    caps[0].pax_headers = {"SCHILY.xattr.security.capability": _CAP_DAC_READ_SEARCH.decode("latin-1")}
    layer = _tar([_entry("usr/local/bin/suid-id", data=id_bin, mode=0o4755, uid=0, gid=0), caps])
    ref = push_hostile(images, registry, tmp_path, [(layer, LAYER_TAR)])
    assert _pull(images, ref) is None
    rec = sandboxes.create(image=ref)
    out = sandboxes.sh(rec, "stat -c %a /usr/local/bin/suid-id; "
                            "setpriv --reuid=1000 --regid=1000 --clear-groups /usr/local/bin/suid-id -u; "
                            "setpriv --reuid=1000 --regid=1000 --clear-groups /usr/local/bin/capcat /etc/shadow "
                            ">/dev/null 2>&1 && echo read-shadow || echo denied; "
                            "grep NoNewPrivs /proc/self/status")
    assert out["stdout"][0] == "4755", out  # the bit is there...
    assert out["stdout"][1] == "1000", out  # ...and gives nothing
    assert out["stdout"][2] == "denied", out
    assert out["stdout"][3].split() == ["NoNewPrivs:", "1"], out


# -- tar bombs ----------------------------------------------------------------------------------


def _zeros_gz(size: int) -> bytes:
    """A gzip layer holding one file of ``size`` zero bytes (compresses ~1000:1)."""
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=1) as gz:
        info = tarfile.TarInfo("bomb")
        info.size = size
        gz.write(info.tobuf(format=tarfile.PAX_FORMAT))
        chunk = bytes(1 << 20)
        for _ in range(size >> 20):
            gz.write(chunk)
        gz.write(bytes(1024))  # end of archive
    return buf.getvalue()


BOMBS: dict[str, tuple[Callable[[], bytes], str, dict[str, str], str]] = {
    # 256 MiB of zeros in a 0.25 MiB layer, against a cap lowered to 32 MiB for the test.
    "decompression bomb": (lambda: _zeros_gz(256 << 20), LAYER_GZ, {"CELLBOX_IMAGE_MAX_BYTES": str(32 << 20)},
                           "MiB"),
    # 20,000 empty files against a cap lowered to 5,000 (the default is 1,000,000).
    "many tiny files": (lambda: _tar([_entry(f"f/{i}") for i in range(20000)]), LAYER_TAR,
                        {"CELLBOX_IMAGE_MAX_FILES": "5000"}, "5000 files"),
}


@pytest.mark.parametrize("case", list(BOMBS))
def test_tar_bomb_is_stopped_by_a_cap(images: Images, registry: registry_mod.Registry, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    make, media, env, word = BOMBS[case]
    ref = push_hostile(images, registry, tmp_path, [(make(), media)], base_image=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    err = _pull(images, ref)
    # Refused at the header that crossed the cap, before extraction wrote anything
    # (no half-unpacked subvolume is left: _assert_refused).
    _assert_refused(images, ref, err, word, "tar bomb")


def test_hostile_base_of_a_build_and_of_a_create_is_refused(images: Images, registry: registry_mod.Registry,
                                                             tmp_path: Path, host: Host) -> None:
    """Not pulled first: named by a build's FROM, or by a create. The image is checked
    before buildah or a sandbox uses it, refused, and not kept under its name."""
    layer = _tar([_entry(".wh.etc"), _entry("etc", "symlink", linkname=str(host.dir))])
    ref = push_hostile(images, registry, tmp_path, [(layer, LAYER_TAR)], base_image=False)
    _pull(images, ref + "-login-only")  # stores the registry's credentials; that tag does not exist
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {ref}\nRUN true\n")
    name = images.track(f"test/sec-hostile-base-{secrets.token_hex(4)}")
    with pytest.raises(CellboxError) as err:
        images.lt.run(images.im.build(BuildRequest(name=name, context=ctx), lambda _: None), timeout=600)
    _assert_refused(images, ref, err.value, "/etc")
    from cellbox.manager.sandboxes import CreateSpec

    with pytest.raises(CellboxError) as err:
        images.lt.run(images.manager.image_manager.create(CreateSpec(image=ref)), timeout=600)
    _assert_refused(images, ref, err.value, "/etc")
    assert images.im.catalog.get(ref) is None
    assert sorted(p.name for p in host.dir.iterdir()) == ["victim"]
