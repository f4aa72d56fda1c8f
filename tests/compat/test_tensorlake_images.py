"""``Image(...).build()`` of the real tensorlake SDK (0.5.163) against cellbox, and the
image calls around it: its default path is Tensorlake's CAS Image Service
(``{api}/images/v4``), which cellbox serves on its buildah builds (api/image_service.py).
The image it makes is then booted with ``Sandbox.create(image=…)``.

Hostile input is sent raw (the SDK itself would not send it): context path tricks, a
Dockerfile outside the context, a wrong seal digest, a guessed upload URL, oversize
bodies, and another project's private image as a base or a pin.
"""

from __future__ import annotations

import hashlib
import io
import secrets
import socket
import tarfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest

from ..keys import auth

pytest.importorskip("tensorlake.image")
from tensorlake.image import (  # noqa: E402
    Image,
    cancel_build,
    delete_sandbox_image,
    find_sandbox_image_by_name,
    get_build,
    list_sandbox_images,
    start_build,
    wait_build,
)
from tensorlake.image.sandbox_builder import SandboxImageError  # noqa: E402

pytestmark = pytest.mark.root
BASE = "cellbox/debian"


@pytest.fixture
def tl_env(live_server, monkeypatch):
    """The SDK's image calls read TENSORLAKE_API_URL at call time (a localhost URL)."""
    monkeypatch.setenv("TENSORLAKE_API_URL", live_server.api_url.replace("127.0.0.1", "localhost"))
    return live_server


@pytest.fixture
def image_name(tl_env):
    name = f"tlimg-{secrets.token_hex(3)}"
    yield name
    httpx.delete(f"{tl_env.api_url}/images/{name}", headers=auth(), timeout=60)


def test_image_build_then_boot(tl_env, image_name, made, tmp_path: Path):
    (tmp_path / "app.txt").write_text("from the context\n")
    image = (Image(name=image_name, base_image=BASE).run("echo built > /hello").env("GREETING", "hi")
             .copy("app.txt", "/srv/app.txt").workdir("/srv"))
    result = image.build(context_dir=str(tmp_path))
    assert result["name"].startswith(image_name) and len(result["id"]) == 64, result
    found = find_sandbox_image_by_name(image_name)
    assert found is not None and found["id"] == result["id"]
    assert image_name in {i["name"].split(":")[0] for i in list_sandbox_images()}

    sbx = made.create(image=image_name)
    out = sbx.run("sh", ["-c", "cat /hello /srv/app.txt; echo $GREETING; pwd"]).stdout.split()
    assert out == ["built", "from", "the", "context", "hi", "/srv"], out
    sbx.terminate()
    made.ids.remove(sbx.sandbox_id)
    delete_sandbox_image(image_name)
    with pytest.raises(SandboxImageError):
        delete_sandbox_image(image_name)  # gone: a clear error, not a silent success


def test_build_operations(tl_env, image_name):
    handle = start_build(Image(name=image_name, base_image=BASE).run("true"))
    assert get_build(handle.build_id).info.build_id == handle.build_id
    image = wait_build(handle.build_id, timeout=600)  # the published image, template-shaped
    assert image["name"].startswith(image_name) and len(image["id"]) == 64, image
    assert handle.wait(timeout=60)["id"] == image["id"]
    info = handle.refresh()
    assert info.status.value == "succeeded" and info.result is not None, info
    assert cancel_build(handle.build_id).outcome.value == "already_completed"


def test_failing_build_is_a_clear_error(tl_env, image_name):
    with pytest.raises(SandboxImageError) as err:
        Image(name=image_name, base_image=BASE).run("exit 3").build()
    assert "exit" in str(err.value).lower() or "failed" in str(err.value).lower()
    r = httpx.get(f"{tl_env.api_url}/images/{image_name}", headers=auth(), timeout=30)
    assert r.status_code == 404  # nothing half-made


# -- hostile input, sent raw ---------------------------------------------------------------


def _tar(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return buf.getvalue()


class Cas:
    """Raw calls to the Image Service view with one key."""

    def __init__(self, server, headers: dict[str, str]) -> None:
        self.base = server.api_url + "/images/v4"
        self.http = httpx.Client(headers=headers, timeout=60)

    def create(self, name: str, **body: Any) -> httpx.Response:
        return self.http.post(f"{self.base}/builds", json={"kind": "dockerfile", "name": name, **body})

    def run(self, name: str, context: bytes, dockerfile_path: str = "Dockerfile", **body: Any) -> dict[str, Any]:
        """Admit, upload, seal, wait: the build's last state."""
        created = self.create(name, dockerfile_path=dockerfile_path, **body)
        assert created.status_code == 201, created.text
        build = created.json()
        up = httpx.put(build["context_upload"]["url"], content=context, timeout=60)  # no key: the URL is it
        assert up.status_code == 200, up.text
        seal = self.http.post(f"{self.base}/builds/{build['build_id']}/context/seal",
                              json={"digest": hashlib.sha256(context).hexdigest()})
        assert seal.status_code == 200, seal.text
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            state = self.http.get(f"{self.base}/builds/{build['build_id']}").json()
            if state["status"] in ("succeeded", "failed", "cancelled"):
                return state  # type: ignore[no-any-return]
            time.sleep(0.5)
        raise AssertionError("build did not finish")


@pytest.fixture
def cas(live_server):
    c = Cas(live_server, auth())
    yield c
    c.http.close()


@pytest.mark.parametrize("context,dockerfile,problem", [
    (_tar({"../escape": b"x", "Dockerfile": b"FROM cellbox/debian\n"}), "Dockerfile", "outside"),
    (_tar({"Dockerfile": b"FROM cellbox/debian\n"}, {"link": "/etc"}), "Dockerfile", "link"),
    (_tar({"Dockerfile": b"FROM cellbox/debian\n"}), "../../etc/passwd", "outside"),
    (_tar({}, {"Dockerfile": "/etc/passwd"}), "Dockerfile", "link"),
    (b"this is not a tar archive", "Dockerfile", "tar"),
])
def test_context_path_tricks_fail_the_build_cleanly(cas, live_server, context, dockerfile, problem):
    name = f"tlhostile-{secrets.token_hex(3)}"
    state = cas.run(name, context, dockerfile_path=dockerfile)
    assert state["status"] == "failed" and problem in state["error"].lower(), state
    assert httpx.get(f"{live_server.api_url}/images/{name}", headers=auth()).status_code == 404


def test_seal_upload_and_size_checks(cas, live_server):
    name = f"tlhostile-{secrets.token_hex(3)}"
    build = cas.create(name).json()
    url = build["context_upload"]["url"]
    # A guessed token, or another build's ID with this token: 404, as for nothing.
    assert httpx.put(url[:-4] + "AAAA", content=b"x").status_code == 404
    assert httpx.put(url.replace(build["build_id"], "build_" + "0" * 24), content=b"x").status_code == 404
    # Only the upload URL goes without a key.
    assert httpx.get(f"{live_server.api_url}/images/v4/builds/{build['build_id']}").status_code == 401
    # Sealing before any upload, or with the wrong digest: 400, and the build can still be sealed right.
    seal = f"{cas.base}/builds/{build['build_id']}/context/seal"
    assert cas.http.post(seal, json={"digest": "0" * 64}).json()["code"] == "INVALID_CONTEXT"
    context = _tar({"Dockerfile": b"FROM cellbox/debian\n"})
    assert httpx.put(url, content=context).status_code == 200
    bad = cas.http.post(seal, json={"digest": "0" * 64})
    assert bad.status_code == 400 and "sha256" in bad.json()["error"]
    # A second build of the same name while this one is open: Tensorlake's conflict.
    again = cas.create(name)
    assert again.status_code == 409 and again.json()["active_build_id"] == build["build_id"]
    assert cas.http.post(f"{cas.base}/builds/cancel", json={"build_id": build["build_id"]}).json()["outcome"] == "cancelled"
    # Oversize: a Content-Length over the cap is refused before any byte is read.
    other = cas.create(f"tlhostile-{secrets.token_hex(3)}").json()
    answer = _put_head_only(other["context_upload"]["url"], 8 << 30)
    assert answer.startswith("HTTP/1.1 400") and "PAYLOAD_TOO_LARGE" in answer, answer
    # A JSON body over the API's 1 MiB cap.
    # A JSON body over the API's 1 MiB cap: refused from its Content-Length (the server then
    # closes, so it is sent head-only, as the context upload above).
    big = _put_head_only(f"{cas.base}/builds", 2 << 20, method="POST", key=auth()["Authorization"])
    assert big.startswith("HTTP/1.1 413"), big
    cas.http.post(f"{cas.base}/builds/cancel", json={"build_id": other["build_id"]})


def _put_head_only(url: str, length: int, method: str = "PUT", key: str | None = None) -> str:
    """Send only the head of a request announcing ``length`` bytes; return the answer."""
    u = urlparse(url)
    auth_line = f"Authorization: {key}\r\n" if key else ""
    with socket.create_connection((u.hostname, u.port), timeout=30) as s:
        s.sendall(f"{method} {u.path} HTTP/1.1\r\nHost: {u.netloc}\r\n{auth_line}Content-Type: application/json\r\n"
                  f"Content-Length: {length}\r\n\r\n".encode())
        answer = b""
        while b"}" not in answer and (chunk := s.recv(4096)):
            answer += chunk
        return answer.decode(errors="replace")


def test_another_projects_image_is_not_a_base(cas, live_server):
    project = f"tlp-{secrets.token_hex(3)}"
    r = httpx.post(f"{live_server.api_url}/keys", json={"project": project, "role": "member"}, headers=auth())
    assert r.status_code == 201, r.text
    member = Cas(live_server, {"Authorization": f"Bearer {r.json()['key']}"})
    private = f"tlpriv-{secrets.token_hex(3)}"
    # An image of another project (made under its namespace path, so private to it).
    other = f"tlo-{secrets.token_hex(3)}"
    r = httpx.post(f"{live_server.api_url}/keys", json={"project": other, "role": "member"}, headers=auth())
    owner = Cas(live_server, {"Authorization": f"Bearer {r.json()['key']}"})
    try:
        state = owner.run(private, _tar({"Dockerfile": b"FROM cellbox/debian\nRUN echo secret > /s\n"}))
        assert state["status"] == "succeeded", state
        assert member.http.get(f"{member.base}/images/name/{private}").status_code == 404
        pin = [{"reference": private, "public_id": state["image_id"]}]
        assert member.create(f"tlm-{secrets.token_hex(3)}", parents=pin).status_code == 404
        state = member.run(f"tlm-{secrets.token_hex(3)}", _tar({"Dockerfile": f"FROM {private}\n".encode()}))
        assert state["status"] == "failed" and "not found" in state["error"], state
        assert member.http.get(f"{member.base}/builds/{state['build_id']}").status_code == 200
        assert owner.http.get(f"{owner.base}/builds/{state['build_id']}").status_code == 404
        # cellbox's own build route holds the same line (it did not before this test).
        own = member.http.post(f"{live_server.api_url}/images/build", params={"name": f"tlm-{secrets.token_hex(3)}"},
                               content=_tar({"Dockerfile": f"FROM {private}\n".encode()}))
        assert own.status_code == 400 and own.json()["code"] == "IMAGE_NOT_FOUND", own.text
    finally:
        owner.http.delete(f"{owner.base}/images/name/{private}")
        member.http.close()
        owner.http.close()
