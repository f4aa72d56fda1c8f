"""Images through a live ``cellbox server``: the HTTP API (errors included), the SDK
(``client.images``, the ``Image`` builder) and the CLI (``cellbox image ...``)."""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cellbox.sdk import Conflict, Image, ImageBuildError, ImageNotFoundError, Sandbox, SandboxClient

from ..sdk.live_server import CELLBOX, LiveServer, Tracker, acquire, release
from . import registry as registry_mod
from .conftest import context_tar, image_leftovers, write_context
from ..keys import auth


@pytest.fixture(scope="module")
def live_server() -> Iterator[LiveServer]:
    server = acquire()
    try:
        yield server
    finally:
        release()


@pytest.fixture
def api(live_server: LiveServer, manager) -> Iterator[SandboxClient]:  # noqa: ANN001
    """An SDK client; every image a test here made is removed after, leaving nothing."""
    client = SandboxClient(live_server.api_url)
    tracker = Tracker(live_server.api_url)
    try:
        yield client
    finally:
        tracker.cleanup()
        for info in client.images.list():
            if info.name.startswith(("test/surf-", "test/py-")) or "/cellbox-test/" in info.name:
                client.images.delete(info.name)
        client.close()
        assert not image_leftovers(manager), "images left parts behind"


def _cellbox(server: LiveServer, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CELLBOX), *args], env=server.env(), capture_output=True, text=True, timeout=600,
                          input=input)


def test_sdk_build_create_remove(api: SandboxClient, live_server: LiveServer, tmp_path: Path) -> None:
    token = secrets.token_hex(4)
    ctx = write_context(tmp_path / "ctx", """
        FROM cellbox/debian
        ARG WHO=nobody
        RUN echo "hello $WHO" > /hello.txt
        WORKDIR /srv
    """)
    name = f"test/surf-{token}"
    lines: list[str] = []
    info = api.images.build(ctx, name, build_args={"WHO": token}, preboot=True, on_progress=lines.append)
    assert info.name == f"{name}:latest" and info.prebooted and info.kind == "oci"
    assert any("STEP" in line for line in lines) and any("pre-booted" in line for line in lines)
    assert info.name in [i.name for i in api.images.list()]

    sbx = Sandbox.create(api_url=live_server.api_url, image=name, memory_mb=512)
    try:
        result = sbx.run("sh", ["-c", "cat /hello.txt; pwd"])
        assert result.stdout.split() == ["hello", token, "/srv"]
        with pytest.raises(Conflict):
            api.images.delete(name)
    finally:
        sbx.terminate()
        sbx.close()
    api.images.delete(name)
    with pytest.raises(ImageNotFoundError):
        api.images.get(name)

    bad = write_context(tmp_path / "bad", "FROM cellbox/debian\nRUN echo about-to-fail && false\n")
    failed_lines: list[str] = []
    with pytest.raises(ImageBuildError) as err:
        api.images.build(bad, f"test/surf-bad-{token}", on_progress=failed_lines.append)
    assert err.value.status == 422
    assert "about-to-fail" in "\n".join(failed_lines)


def test_entrypoint_runs_after_boot(api: SandboxClient, live_server: LiveServer, tmp_path: Path) -> None:
    """An image's ENTRYPOINT (with CMD as its arguments) starts after boot, as with
    ``docker run``, unless the create gives its own ``entrypoint``."""
    token = secrets.token_hex(4)
    ctx = write_context(tmp_path / "ctx", """
        FROM cellbox/debian
        ENTRYPOINT ["sh", "-c", "echo $0 $1 > /tmp/entry.txt; exec sleep 600"]
        CMD ["started", "by-entrypoint"]
    """)
    name = api.images.build(ctx, f"test/surf-ep-{token}").name
    sbx = Sandbox.create(api_url=live_server.api_url, image=name, memory_mb=512)
    try:
        out = sbx.run("sh", ["-c", "for i in $(seq 50); do test -s /tmp/entry.txt && break; sleep 0.1; done; "
                                   "cat /tmp/entry.txt"]).stdout
        assert out.strip() == "started by-entrypoint", (sbx.list_processes(), api.get(sbx.id).raw)
    finally:
        sbx.terminate()
        sbx.close()
    own = Sandbox.create(api_url=live_server.api_url, image=name, memory_mb=512, entrypoint=["sleep", "300"])
    try:
        assert own.run("sh", ["-c", "sleep 0.5; test -e /tmp/entry.txt && echo ran || echo not-run"]).stdout.strip() \
            == "not-run"
    finally:
        own.terminate()
        own.close()


def test_python_image_builder(api: SandboxClient, live_server: LiveServer, tmp_path: Path) -> None:
    token = secrets.token_hex(4)
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "main.py").write_text(f"print('app {token}')\n")
    image = (Image(f"test/py-{token}", tag="v1")
             .run(["mkdir -p /srv/data", "echo built > /srv/data/built"])
             .env("APP_MODE", "test mode")
             .copy(tmp_path / "app", "/srv/app")
             .workdir("/srv/app"))
    info = image.build(api)
    assert info.name == f"test/py-{token}:v1"
    sbx = Sandbox.create(api_url=live_server.api_url, image=info.name, memory_mb=512)
    try:
        out = sbx.run("sh", ["-c", 'python3 main.py; echo "$APP_MODE"; cat /srv/data/built; pwd']).stdout
        assert out.splitlines() == [f"app {token}", "test mode", "built", "/srv/app"]
    finally:
        sbx.terminate()
        sbx.close()


def test_cli_build_pull_ls_rm(api: SandboxClient, live_server: LiveServer, registry: registry_mod.Registry,
                              tmp_path: Path) -> None:
    token = secrets.token_hex(4)
    ctx = write_context(tmp_path / "ctx", "FROM cellbox/debian\nRUN echo cli > /cli.txt\n")
    df = tmp_path / "elsewhere.Dockerfile"  # -f outside the context
    df.write_text(f"FROM cellbox/debian\nRUN echo 'cli {token}' > /cli.txt\n")
    name = f"test/surf-cli-{token}"
    built = _cellbox(live_server, "image", "build", "-f", str(df), "-t", name, str(ctx))
    assert built.returncode == 0, built.stderr
    assert built.stdout.strip() == f"{name}:latest"
    assert "STEP" in built.stderr  # progress on stderr

    listed = json.loads(_cellbox(live_server, "image", "ls", "--json").stdout)
    assert f"{name}:latest" in [i["name"] for i in listed]
    table = _cellbox(live_server, "image", "ls").stdout
    assert f"{name}:latest" in table
    warmed = _cellbox(live_server, "image", "warm", name, "1", "--json")
    assert warmed.returncode == 0 and json.loads(warmed.stdout)["warm_pool"] == 1, warmed.stderr
    assert _cellbox(live_server, "image", "warm", name, "0").returncode == 0
    assert _cellbox(live_server, "image", "warm", name, "17").returncode == 2  # click: out of range

    # Push it to the loopback registry, pull it back through the CLI (credentials on stdin).
    remote = f"{registry.host}/cellbox-test/surf-{token}:v1"
    registry.push(api_layout(live_server), f"{name}:latest", f"cellbox-test/surf-{token}:v1")
    pulled = _cellbox(live_server, "image", "pull", "-u", registry_mod.USER, "--password-stdin", remote,
                      input=registry_mod.PASSWORD + "\n")
    assert pulled.returncode == 0, pulled.stderr
    assert json.loads(_cellbox(live_server, "image", "describe", remote).stdout)["source"] == "pull"

    sid = _cellbox(live_server, "new", "-m", "512", "--image", remote).stdout.strip()
    try:
        assert _cellbox(live_server, "exec", sid, "cat", "/cli.txt").stdout.strip() == f"cli {token}"
        refused = _cellbox(live_server, "image", "rm", remote)
        assert refused.returncode == 1 and "in use" in refused.stderr
    finally:
        _cellbox(live_server, "terminate", sid)
    removed = _cellbox(live_server, "image", "rm", remote, name)
    assert removed.returncode == 0, removed.stderr
    missing = _cellbox(live_server, "image", "describe", name)
    assert missing.returncode == 1 and "not found" in missing.stderr
    pruned = _cellbox(live_server, "image", "prune")  # the build cache those builds left
    assert pruned.returncode == 0 and int(pruned.stdout) >= 0, pruned.stderr


def api_layout(server: LiveServer) -> Path:
    from cellbox.config import load

    return load().oci_dir




@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "code"),
    [
        ("POST", "/images/build?name=test/surf-x", {"content": b""}, 400, "INVALID_CONTEXT"),
        ("POST", "/images/build?name=test/surf-x", {"content": b"not a tar at all" * 64}, 400, "INVALID_CONTEXT"),
        ("POST", "/images/build?name=Bad%20Name", {"content": context_tar({"Dockerfile": "FROM cellbox/debian\n"})},
         400, "INVALID_REQUEST"),
        ("POST", "/images/build?name=test/surf-x", {"content": context_tar({"other": "x"})}, 400, "DOCKERFILE_NOT_FOUND"),
        ("POST", "/images/build?name=test/surf-x&build_arg=novalue",
         {"content": context_tar({"Dockerfile": "FROM cellbox/debian\n"})}, 400, "INVALID_REQUEST"),
        ("POST", "/images/pull", {"json": {"image": "no-registry/name"}}, 400, "INVALID_REQUEST"),
        ("POST", "/images/pull", {"json": {"image": "127.0.0.1:1/a:b", "username": "u"}}, 400, "INVALID_REQUEST"),
        ("POST", "/images/pull", {"json": {}}, 400, "INVALID_REQUEST"),
        ("GET", "/images/test/no-such-image", {}, 404, "IMAGE_NOT_FOUND"),
        ("DELETE", "/images/cellbox/debian", {}, 409, "IMAGE_PROTECTED"),
        ("POST", "/images/register", {"json": {"name": "test/surf-r", "snapshot_id": "nosuchsnapshot"}},
         404, "SNAPSHOT_NOT_FOUND"),
        ("POST", "/images/test/no-such-image/preboot", {"json": {}}, 404, "IMAGE_NOT_FOUND"),
        ("POST", "/sandboxes", {"json": {"image": "test/no-such-image"}}, 404, "IMAGE_NOT_FOUND"),
        ("POST", "/sandboxes", {"json": {"image": "Bad Image!"}}, 400, "INVALID_REQUEST"),
    ],
)
def test_api_errors(live_server: LiveServer, method: str, path: str, kwargs: dict, status: int, code: str) -> None:
    r = httpx.request(method, live_server.api_url + path, timeout=60, headers=auth(), **kwargs)
    assert r.status_code == status, r.text
    assert r.json()["code"] == code, r.text
    assert r.json()["error"]


def test_templates_compat(api: SandboxClient, live_server: LiveServer) -> None:
    """Tensorlake's catalog routes (spec §5) over the same images."""
    base = live_server.api_url
    items = httpx.get(f"{base}/sandbox-templates", headers=auth()).json()["items"]
    assert "cellbox/debian:latest" in [t["name"] for t in items]
    one = httpx.get(f"{base}/sandbox-templates/by-name/cellbox/debian", headers=auth()).json()
    assert one["name"] == "cellbox/debian:latest" and one["public"] is False
    assert httpx.delete(f"{base}/sandbox-templates/test/none", headers=auth()).status_code == 404
