"""In-sandbox agent: file API (confinement to --root, streaming, error codes)."""

from __future__ import annotations

import hashlib
import os
import socket
import sys
from pathlib import Path
from typing import Iterator

import httpx
import pytest

try:
    from cellbox.agent.harness import AgentProcess
except ImportError:  # running without an installed package: use the src layout
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
    from cellbox.agent.harness import AgentProcess

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The agent's --root, plus a sibling dir that must stay unreachable."""
    base = tmp_path_factory.mktemp("files")
    (base / "outside").mkdir()
    (base / "outside" / "secret.txt").write_text("top secret")
    (base / "root").mkdir()
    return base / "root"


@pytest.fixture(scope="module")
def agent(sandbox: Path) -> Iterator[AgentProcess]:
    with AgentProcess(root=str(sandbox)) as proc:
        yield proc


@pytest.fixture()
def client(agent: AgentProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=agent.url, timeout=60) as c:
        yield c


def files(path: str) -> str:
    return "/api/v1/files?" + httpx.QueryParams({"path": path}).__str__()


def listing(path: str) -> str:
    return "/api/v1/files/list?" + httpx.QueryParams({"path": path}).__str__()


def test_put_get_list_delete_roundtrip(client: httpx.Client, sandbox: Path) -> None:
    r = client.put(files("/a/b/c/hello world.txt"), content=b"hi there\n")
    assert r.status_code == 204, r.text
    assert (sandbox / "a/b/c/hello world.txt").read_bytes() == b"hi there\n"  # parents created
    r = client.get(files("/a/b/c/hello world.txt"))
    assert r.status_code == 200 and r.content == b"hi there\n"
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.headers["content-length"] == "9"
    listed = client.get(listing("/a/b")).json()
    assert listed["path"] == "/a/b"
    assert listed["entries"] == [
        {"name": "c", "is_dir": True, "size": None, "modified_at": listed["entries"][0]["modified_at"]}
    ]
    entry = client.get(listing("/a/b/c")).json()["entries"][0]
    assert entry["name"] == "hello world.txt" and entry["is_dir"] is False and entry["size"] == 9
    assert isinstance(entry["modified_at"], int) and entry["modified_at"] > 1e12
    # overwrite keeps the mode and leaves no temp files behind
    os.chmod(sandbox / "a/b/c/hello world.txt", 0o600)
    assert client.put(files("/a/b/c/hello world.txt"), content=b"v2").status_code == 204
    assert (sandbox / "a/b/c/hello world.txt").read_bytes() == b"v2"
    assert (sandbox / "a/b/c/hello world.txt").stat().st_mode & 0o777 == 0o600
    assert os.listdir(sandbox / "a/b/c") == ["hello world.txt"]
    assert client.delete(files("/a/b/c/hello world.txt")).status_code == 204
    assert not (sandbox / "a/b/c/hello world.txt").exists()
    assert client.get(files("/a/b/c/hello world.txt")).status_code == 404


def test_form_encoded_query(client: httpx.Client, sandbox: Path) -> None:
    (sandbox / "tmp").mkdir(exist_ok=True)
    (sandbox / "tmp" / "a b.txt").write_bytes(b"plus")
    assert client.get("/api/v1/files?path=%2Ftmp%2Fa+b.txt").content == b"plus"  # as the SDK sends it


def test_empty_file(client: httpx.Client, sandbox: Path) -> None:
    assert client.put(files("/empty"), content=b"").status_code == 204
    r = client.get(files("/empty"))
    assert r.status_code == 200 and r.content == b""


def test_large_streamed_upload_and_download(client: httpx.Client, sandbox: Path) -> None:
    chunk = os.urandom(1 << 20)
    total = 50
    digest = hashlib.sha256()

    def body() -> Iterator[bytes]:  # chunked upload, never materialised in one piece
        for i in range(total):
            piece = chunk[i:] + chunk[:i]
            digest.update(piece)
            yield piece

    r = client.put(files("/big/blob.bin"), content=body())
    assert r.status_code == 204, r.text
    assert (sandbox / "big/blob.bin").stat().st_size == total << 20
    down = hashlib.sha256()
    size = 0
    with client.stream("GET", files("/big/blob.bin")) as r:
        assert r.status_code == 200
        assert int(r.headers["content-length"]) == total << 20
        for data in r.iter_bytes():
            down.update(data)
            size += len(data)
    assert size == total << 20 and down.hexdigest() == digest.hexdigest()
    # also with a Content-Length upload from a file object
    path = sandbox / "big" / "src.bin"
    with open(path, "wb") as f:
        for _ in range(8):
            f.write(chunk)
    with open(path, "rb") as f:
        assert client.put(files("/big/copy.bin"), content=f).status_code == 204
    assert (sandbox / "big/copy.bin").read_bytes() == path.read_bytes()
    assert client.delete(files("/big")).status_code == 204  # recursive
    assert not (sandbox / "big").exists()


def test_path_traversal_rejected(client: httpx.Client, sandbox: Path) -> None:
    for path in ("/../outside/secret.txt", "/a/../../outside/secret.txt", "/x/.."):
        for method, url in (("GET", files(path)), ("DELETE", files(path)), ("GET", listing(path))):
            r = client.request(method, url)
            assert r.status_code == 403, (method, path)
            assert r.json()["code"] == "PATH_TRAVERSAL"
        r = client.put(files(path), content=b"x")
        assert r.status_code == 403 and r.json()["code"] == "PATH_TRAVERSAL"
    assert (sandbox.parent / "outside" / "secret.txt").read_text() == "top secret"


def test_symlink_escape_rejected(client: httpx.Client, sandbox: Path) -> None:
    outside = sandbox.parent / "outside"
    os.symlink(outside / "secret.txt", sandbox / "evil-file")
    os.symlink(outside, sandbox / "evil-dir")
    os.symlink("/etc", sandbox / "abs-etc")
    cases = [
        ("GET", files("/evil-file")),
        ("GET", files("/evil-dir/secret.txt")),
        ("GET", listing("/evil-dir")),
        ("GET", files("/abs-etc/passwd")),
        ("GET", listing("/abs-etc")),
        ("DELETE", files("/evil-dir/secret.txt")),
    ]
    for method, url in cases:
        r = client.request(method, url)
        assert r.status_code == 403, (method, url, r.text)
        assert r.json()["code"] == "PATH_TRAVERSAL"
    r = client.put(files("/evil-dir/new.txt"), content=b"pwned")
    assert r.status_code == 403 and r.json()["code"] == "PATH_TRAVERSAL"
    r = client.put(files("/evil-dir/sub/new.txt"), content=b"pwned")
    assert r.status_code == 403
    assert sorted(os.listdir(outside)) == ["secret.txt"]
    # writing *to* a symlink replaces the link, it never writes through it
    assert client.put(files("/evil-file"), content=b"replaced").status_code == 204
    assert not (sandbox / "evil-file").is_symlink()
    assert (outside / "secret.txt").read_text() == "top secret"
    # deleting a symlink removes the link only
    assert client.delete(files("/evil-dir")).status_code == 204
    assert outside.is_dir() and not (sandbox / "evil-dir").exists()
    # symlinks that stay inside the root are fine
    (sandbox / "inner").mkdir()
    (sandbox / "inner" / "f").write_text("ok")
    os.symlink("inner", sandbox / "inner-link")
    assert client.get(files("/inner-link/f")).content == b"ok"
    os.unlink(sandbox / "abs-etc")


def test_error_codes(client: httpx.Client, sandbox: Path) -> None:
    (sandbox / "d").mkdir(exist_ok=True)
    (sandbox / "d" / "f.txt").write_text("x")

    def check(method: str, url: str, status: int, code: str, **kw: object) -> None:
        r = client.request(method, url, **kw)  # type: ignore[arg-type]
        assert r.status_code == status, (method, url, r.text)
        assert r.json()["code"] == code and r.json()["error"]

    check("GET", files("/missing.txt"), 404, "NOT_FOUND")
    check("GET", listing("/missing"), 404, "NOT_FOUND")
    check("DELETE", files("/missing.txt"), 404, "NOT_FOUND")
    check("GET", files("/d"), 400, "IS_DIRECTORY")
    check("PUT", files("/d"), 400, "IS_DIRECTORY", content=b"x")
    check("GET", listing("/d/f.txt"), 400, "NOT_A_DIRECTORY")
    check("PUT", files("/d/f.txt/child"), 400, "NOT_A_DIRECTORY", content=b"x")
    check("GET", files("relative/path"), 400, "INVALID_PATH")
    check("GET", "/api/v1/files", 400, "INVALID_PATH")
    check("GET", "/api/v1/files?path=", 400, "INVALID_PATH")
    check("GET", "/api/v1/files?path=%2Fa%00b", 400, "INVALID_PATH")
    check("DELETE", files("/"), 400, "INVALID_PATH")
    assert client.get(listing("/")).status_code == 200


def test_put_error_with_large_unread_body_still_answers(agent: AgentProcess, sandbox: Path) -> None:
    """An early error on an upload must reach the client (lingering close)."""
    (sandbox / "dir2").mkdir(exist_ok=True)
    with socket.create_connection(("127.0.0.1", agent.port)) as sock:
        sock.settimeout(10)
        size = 4 << 20
        sock.sendall(f"PUT /api/v1/files?path=/dir2 HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n".encode())
        try:
            sock.sendall(b"\0" * size)
        except OSError:
            pass
        data = b""
        while b"IS_DIRECTORY" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        assert data.startswith(b"HTTP/1.1 400") and b"IS_DIRECTORY" in data
        assert b"connection: close" in data.lower()


def test_delete_directory_recursively(client: httpx.Client, sandbox: Path) -> None:
    (sandbox / "tree" / "x" / "y").mkdir(parents=True)
    (sandbox / "tree" / "x" / "y" / "z.txt").write_text("z")
    (sandbox / "tree" / "top.txt").write_text("t")
    assert client.delete(files("/tree")).status_code == 204
    assert not (sandbox / "tree").exists()


def test_download_of_procfs_style_zero_size_file(client: httpx.Client, sandbox: Path) -> None:
    # with --root a temp dir we cannot reach /proc; emulate "unknown size" via an empty read
    (sandbox / "zero").write_bytes(b"")
    r = client.get(files("/zero"))
    assert r.status_code == 200 and r.content == b""


def test_root_slash_default_serves_real_paths(tmp_path: Path) -> None:
    """With the production root '/', sandbox paths are real paths (incl. procfs)."""
    target = tmp_path / "real.txt"
    target.write_text("real")
    with AgentProcess() as agent, httpx.Client(base_url=agent.url, timeout=10) as client:
        assert client.get(files(str(target))).content == b"real"
        cpuinfo = client.get(files("/proc/self/status"))
        assert cpuinfo.status_code == 200 and b"Name:" in cpuinfo.content
        assert client.get(files("/dev/null")).json()["code"] == "NOT_A_REGULAR_FILE"
