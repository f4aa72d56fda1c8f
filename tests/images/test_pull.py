"""Pulls from a real registry on loopback (docker-registry with htpasswd auth): refused
without credentials, digest-checked, layers stored once and shared, and a sandbox
created straight from ``HOST:PORT/NAME:TAG``."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from cellbox.errors import CellboxError, NotFound
from cellbox.images.build import BuildRequest
from cellbox.manager.sandboxes import CreateSpec

from . import registry as registry_mod
from .conftest import Images, write_context


@pytest.fixture
def pushed(images: Images, registry: registry_mod.Registry, tmp_path: Path) -> dict[str, str]:
    """An image built here and pushed to the registry under two tags."""
    token = secrets.token_hex(4)
    ctx = write_context(tmp_path / "ctx", f"""
        FROM cellbox/debian
        RUN echo "pushed {token}" > /pushed.txt
    """)
    local = images.track(f"test/topush-{token}")
    images.lt.run(images.im.build(BuildRequest(name=local, context=ctx), lambda _: None), timeout=600)
    layout = images.manager.images.layout
    repo = f"cellbox-test/app-{token}"
    d1 = registry.push(layout, f"{local}:latest", f"{repo}:v1")
    registry.push(layout, f"{local}:latest", f"{repo}:v2")
    images.lt.run(images.im.remove(local))
    return {"repo": f"{registry.host}/{repo}", "token": token, "digest": d1}


def _blob_names(images: Images) -> set[str]:
    return {p.name for p in (images.manager.images.layout / "blobs" / "sha256").iterdir()}


def test_pull_with_auth_digest_and_shared_layers(images: Images, sandboxes, pushed: dict[str, str]) -> None:
    im = images.im
    v1, v2 = f"{pushed['repo']}:v1", f"{pushed['repo']}:v2"
    images.track(v1)
    images.track(v2)
    with pytest.raises(CellboxError) as err:  # the registry wants credentials
        images.lt.run(im.pull(v1))
    assert err.value.status == 401 and err.value.code == "REGISTRY_UNAUTHORIZED"
    with pytest.raises(CellboxError) as err:
        images.lt.run(im.pull(v1, username=registry_mod.USER, password="wrong"))
    assert err.value.status == 401

    lines: list[str] = []
    info = images.lt.run(im.pull(v1, username=registry_mod.USER, password=registry_mod.PASSWORD,
                                 on_line=lines.append), timeout=600)
    assert info.source == "pull" and info.digest == pushed["digest"]
    assert any("Copying blob" in line for line in lines)

    # A second tag of the same image: every blob is already stored, none is added.
    before = _blob_names(images)
    lines.clear()
    info2 = images.lt.run(im.pull(v2, on_line=lines.append), timeout=600)  # credentials were remembered
    assert info2.digest == info.digest
    assert _blob_names(images) == before
    assert info2.layers == info.layers

    rec = sandboxes.create(image=v1)
    assert sandboxes.sh(rec, "cat /pushed.txt")["out"].strip() == f"pushed {pushed['token']}"
    assert images.im.describe(v1).in_use == 1

    # Pinned by digest: the registry's manifest must be exactly the one named.
    pinned = f"{pushed['repo']}@{pushed['digest']}"
    images.track(pinned)
    assert images.lt.run(im.pull(pinned), timeout=600).digest == pushed["digest"]
    wrong = f"{pushed['repo']}@sha256:{'0' * 64}"
    with pytest.raises(CellboxError) as err:
        images.lt.run(im.pull(wrong))
    assert 400 <= err.value.status < 500 or err.value.status == 502
    assert wrong not in images.manager.images.refs()


def test_create_from_registry_reference_pulls_on_demand(images: Images, sandboxes, manager,
                                                         pushed: dict[str, str]) -> None:
    ref = images.track(f"{pushed['repo']}:v2")
    images.lt.run(images.im.pull(f"{pushed['repo']}:v1", username=registry_mod.USER,
                                 password=registry_mod.PASSWORD), timeout=600)
    images.track(f"{pushed['repo']}:v1")
    rec = sandboxes.create(image=ref)  # not pulled yet: create pulls it
    assert rec.image == ref
    assert sandboxes.sh(rec, "cat /pushed.txt")["out"].strip() == f"pushed {pushed['token']}"


def test_pull_errors(images: Images, registry: registry_mod.Registry) -> None:
    missing = f"{registry.host}/cellbox-test/none:v1"
    with pytest.raises(NotFound):
        images.lt.run(images.im.pull(missing, username=registry_mod.USER, password=registry_mod.PASSWORD))
    with pytest.raises(CellboxError) as err:  # nothing listens there
        images.lt.run(images.im.pull(f"127.0.0.1:{registry_mod._free_port()}/x/y:z"))
    assert err.value.status == 502 and err.value.code == "REGISTRY_UNAVAILABLE"
    for bad in ("not a ref", "127.0.0.1:5000/UPPER:tag", "local/name:tag"):
        with pytest.raises(CellboxError) as err:
            images.lt.run(images.im.pull(bad))
        assert err.value.status == 400, bad
    with pytest.raises(CellboxError) as err:
        images.lt.run(images.manager.create(CreateSpec(image=f"{registry.host}/cellbox-test/none:v9")))
    assert err.value.status == 404
