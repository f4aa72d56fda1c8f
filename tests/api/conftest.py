"""The real ``cellbox server`` as a subprocess, and an HTTP client that cleans up.

One server per session (default data dir, 127.0.0.1, free ports), started with
``.venv/bin/cellbox server`` and stopped with SIGTERM by PID. It runs without a warm
pool so that every create takes the same (cold) path and a fresh create stays
``pending`` long enough to be cancelled. Its log is checked at the end: a request
answered 500 or an unexpected traceback fails the session.

``api`` records every sandbox a test creates and DELETEs them all afterwards, even
when the test fails.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cellbox.config import Settings
from cellbox.manager.store import Store

from ..conftest import _missing_requirements
from ..keys import auth

# What the Tensorlake SDK sends on a blocking create (spec §1.5).
SDK_CREATE_HEADERS = {
    "X-Tensorlake-Request-Timeout-Ms": "300000",
    "X-Tensorlake-Request-Timeout-Grace-Ms": "5000",
    "User-Agent": "tensorlake-python-sdk/0.5.163",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """``cellbox server`` in a subprocess; start/stop/restart keep the same ports."""

    def __init__(self, log_path: Path) -> None:
        self.api_port, self.proxy_port = free_port(), free_port()
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.extra_env: dict[str, str] = {}  # e.g. CELLBOX_FAULT_POINT (tests/security/test_faults.py)
        self.url = f"http://127.0.0.1:{self.api_port}"
        self.proxy_url = f"http://localhost:{self.proxy_port}"

    def start(self, timeout: float = 90) -> None:
        exe = Path(sys.executable).parent / "cellbox"
        env = {**os.environ, "CELLBOX_WARM_POOL": "0", **self.extra_env}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(exe), "server", "--host", "127.0.0.1", "--api-port", str(self.api_port),
                 "--proxy-port", str(self.proxy_port), "--access-log"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/sandboxes?limit=1", timeout=2, headers=auth()).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not answer within {timeout}s:\n{self.log_tail()}")

    def stop(self, timeout: float = 60) -> int | None:
        """SIGTERM, by PID; SIGKILL if it does not exit in time. Returns the exit code."""
        if self.proc is None:
            return None
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return "(no log)"


@pytest.fixture(scope="session")
def server(settings: Settings) -> Iterator[ServerProcess]:
    if reason := _missing_requirements(settings):
        pytest.skip(reason)
    # Not under pytest's rotating tmp dirs: the log must outlive the run for diagnosis.
    log_path = Path(tempfile.gettempdir()) / f"cellbox-api-server-{os.getpid()}.log"
    log_path.unlink(missing_ok=True)
    srv = ServerProcess(log_path)
    srv.start()
    try:
        yield srv
    finally:
        code = srv.stop()
        log = srv.log_path.read_text(errors="replace")
        assert code == 0, f"server exit code {code}:\n{srv.log_tail()}"
        bad = [line for line in log.splitlines() if '" 500' in line or "unexpected error" in line]
        assert not bad, "the server answered 500 or hit an unexpected error:\n" + "\n".join(bad[:20])


class Api:
    """An HTTP client for one namespace that remembers what it created."""

    def __init__(self, server: ServerProcess, namespace: str = "default", made: list[str] | None = None) -> None:
        self.server = server
        self.namespace = namespace
        self.base = f"{server.url}/v1/namespaces/{namespace}"
        self.http = httpx.Client(timeout=120, headers=auth())
        # "<base>/sandboxes/<id>" of everything created, shared with in_namespace() clients.
        self.made: list[str] = made if made is not None else []

    def in_namespace(self, namespace: str) -> "Api":
        return Api(self.server, namespace, self.made)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        resp = self.http.request(method, self.base + path, **kwargs)
        if method == "POST" and resp.status_code < 300:
            try:
                sid = resp.json().get("sandbox_id")
            except (ValueError, AttributeError):
                sid = None
            if sid:
                self.made.append(f"{self.base}/sandboxes/{sid}")
        return resp

    def create(self, body: dict[str, Any] | None = None, *, expect: int = 200, **kwargs: Any) -> dict[str, Any]:
        headers = kwargs.pop("headers", SDK_CREATE_HEADERS)
        resp = self.request("POST", "/sandboxes", json=body if body is not None else {}, headers=headers, **kwargs)
        assert resp.status_code == expect, resp.text
        return resp.json()  # type: ignore[no-any-return]

    def get(self, ref: str) -> dict[str, Any]:
        resp = self.request("GET", f"/sandboxes/{ref}")
        assert resp.status_code == 200, resp.text
        return resp.json()  # type: ignore[no-any-return]

    def wait_status(self, ref: str, *statuses: str, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            info = self.get(ref)
            if info["status"] in statuses:
                return info
            assert time.monotonic() < deadline, f"{ref} still {info['status']} after {timeout}s"
            time.sleep(0.1)

    def delete(self, ref: str) -> httpx.Response:
        return self.request("DELETE", f"/sandboxes/{ref}")

    def cleanup(self) -> None:
        """DELETE everything created through this client or its namespace twins."""
        with httpx.Client(timeout=120, headers=auth()) as http:
            for url in self.made:
                try:
                    http.delete(url)
                except httpx.HTTPError:
                    pass
        self.http.close()


def agent_ip(settings: Settings, sandbox_id: str) -> str:
    store = Store(settings.db_path)
    try:
        rec = store.get(sandbox_id)
        assert rec is not None and rec.ip
        return rec.ip
    finally:
        store.close()


@pytest.fixture
def api(server: ServerProcess) -> Iterator[Api]:
    client = Api(server)
    try:
        yield client
    finally:
        client.cleanup()
