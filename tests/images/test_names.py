"""Image names as users type them (issue 14 item 7): Docker Hub short names through a
mirror (the real loopback registry standing in for it), Tensorlake's built-in names.
Before: ``python:3.12-slim`` was a bare 404 and ``tensorlake/ubuntu-minimal`` too."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from cellbox.api.models import CreateSandboxRequest
from cellbox.errors import CellboxError, InvalidRequest
from cellbox.images.build import BuildRequest
from cellbox.images.names import builtin_alias

from . import registry as registry_mod
from .conftest import Images, write_context


@pytest.fixture
def forget_login(registry: registry_mod.Registry, settings):  # noqa: ANN001
    """This test logs in to the session's registry; test_pull.py expects no credentials."""
    yield
    from cellbox.images.tools import Tools

    registry_mod.forget_credentials(registry, Tools(settings).auth_file)


def test_short_name_is_docker_hub_through_the_mirror(images: Images, sandboxes, registry: registry_mod.Registry,
                                                     tmp_path: Path, monkeypatch, forget_login) -> None:
    token = secrets.token_hex(4)
    ctx = write_context(tmp_path / "ctx", f'FROM cellbox/debian\nRUN echo "hub {token}" > /hub.txt\n')
    local = images.track(f"test/hub-{token}")
    images.lt.run(images.im.build(BuildRequest(name=local, context=ctx), lambda _: None), timeout=600)
    # As Docker Hub would hold an official image: library/<name>.
    registry.push(images.manager.images.layout, f"{local}:latest", f"library/cbxhub-{token}:v1")
    short = f"cbxhub-{token}:v1"
    # Without a mirror: a 404 that says what the name means and what to set; nothing pulled.
    monkeypatch.delenv("CELLBOX_REGISTRY_MIRROR", raising=False)
    with pytest.raises(CellboxError) as err:
        images.lt.run(images.im.ensure_local(short))
    assert err.value.status == 404
    assert f"docker.io/library/{short}" in str(err.value) and "CELLBOX_REGISTRY_MIRROR" in str(err.value)
    # With the mirror: pulled from it, stored under its docker.io name.
    monkeypatch.setenv("CELLBOX_REGISTRY_MIRROR", registry.host)
    login = images.track(f"{registry.host}/library/cbxhub-{token}:v1")  # remembers the registry's credentials
    images.lt.run(images.im.pull(login, username=registry_mod.USER, password=registry_mod.PASSWORD), timeout=600)
    canonical = images.track(f"docker.io/library/{short}")
    rec = sandboxes.create(image=short)
    assert rec.image == canonical
    assert sandboxes.sh(rec, "cat /hub.txt")["out"].strip() == f"hub {token}"
    assert canonical in images.manager.images.refs()
    # An explicit docker.io reference goes through the mirror too; an unknown one is the registry's 404.
    assert images.lt.run(images.im.ensure_local(f"docker.io/library/{short}")) == canonical
    with pytest.raises(CellboxError) as err:
        images.lt.run(images.im.ensure_local(f"cbxhub-none-{token}:v1"))
    assert err.value.status == 404 and registry.host in str(err.value)


def test_tensorlake_builtin_names() -> None:
    assert builtin_alias("tensorlake/ubuntu-minimal") == (True, None)
    assert builtin_alias("tensorlake/debian-minimal:latest") == (True, None)
    assert builtin_alias("python:3.12-slim") == (False, "python:3.12-slim")
    with pytest.raises(InvalidRequest, match="ubuntu-minimal"):
        builtin_alias("tensorlake/ubuntu-vnc")
    spec = CreateSandboxRequest.model_validate({"image": "tensorlake/ubuntu-minimal"}).to_options("default").spec
    assert spec.image is None  # the server's default (built-in) image
