"""The E2B SDK over the door's TLS: https for the REST API and for envd (its default,
non-debug mode), trusting our self-signed CA through ``SSL_CERT_FILE`` only; and an
upload over the server's cap is a 413, multipart or streamed.

A server of this test's own on loopback with a certificate from
``auth.tls.make_self_signed`` (what ``cellbox setup --tls-self-signed`` makes); the SDK
runs in a child process whose only trust setting is ``SSL_CERT_FILE``. Without it the
same script must fail on the certificate, which proves the traffic was TLS-checked.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cellbox.auth.tls import make_self_signed
from cellbox.config import Settings

from ..api.conftest import ServerProcess
from ..conftest import _missing_requirements
from ..keys import auth

pytestmark = [pytest.mark.root, pytest.mark.e2b_calls("TLS: REST API and envd over https (SSL_CERT_FILE)")]

SCRIPT = textwrap.dedent("""
    from e2b import Sandbox
    sbx = Sandbox.create(timeout=120)
    try:
        assert sbx.commands.run("echo over tls").stdout == "over tls\\n"
        sbx.files.write("/tmp/t.txt", "tls file")
        assert sbx.files.read("/tmp/t.txt") == "tls file"
        import io
        for big in (b"x" * 2_000_000, io.BytesIO(b"y" * 2_000_000)):  # multipart, streamed
            try:
                sbx.files.write("/tmp/big", big)
                raise SystemExit("an upload over the server's cap was accepted")
            except Exception as exc:
                assert "413" in str(exc), exc
        assert sbx.commands.run("echo alive").stdout == "alive\\n"
        print("OK", sbx.sandbox_id)
    finally:
        sbx.kill()
""")


class TLSServer(ServerProcess):
    def __init__(self, log_path: Path, tls_dir: Path) -> None:
        super().__init__(log_path)
        self.ca, self.cert, self.key = make_self_signed(tls_dir, ["localhost", "127.0.0.1"])
        self.url = f"https://localhost:{self.api_port}"
        self.proxy_url = f"https://localhost:{self.proxy_port}"

    def start(self, timeout: float = 90) -> None:
        # A 1 MB upload cap (default 512 MiB), to prove oversized uploads are refused cheaply.
        env = {**os.environ, "CELLBOX_WARM_POOL": "0", "CELLBOX_E2B_MAX_UPLOAD": "1000000"}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(Path(sys.executable).parent / "cellbox"), "server", "--host", "127.0.0.1",
                 "--api-port", str(self.api_port), "--proxy-port", str(self.proxy_port),
                 "--tls-cert", str(self.cert), "--tls-key", str(self.key)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        verify = ssl.create_default_context(cafile=str(self.ca))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log_tail()
            try:
                if httpx.get(f"{self.url}/health", verify=verify, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"TLS server did not answer:\n{self.log_tail()}")


@pytest.fixture(scope="module")
def tls_server(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TLSServer]:
    if reason := _missing_requirements(settings):
        pytest.skip(reason)
    tmp = tmp_path_factory.mktemp("e2b-tls")
    srv = TLSServer(tmp / "server.log", tmp / "tls")
    srv.start()
    try:
        yield srv
    finally:
        assert srv.stop() == 0, srv.log_tail()


def _run(server: TLSServer, key: str, trust: bool) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "HOME": "/nonexistent", "E2B_API_KEY": key, "E2B_DOMAIN": "local",
           "E2B_API_URL": f"{server.url}/e2b", "E2B_SANDBOX_URL": server.proxy_url}
    if trust:
        env["SSL_CERT_FILE"] = str(server.ca)
    return subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=240, env=env)


def test_e2b_sdk_over_tls_with_the_self_signed_ca(tls_server: TLSServer):
    verify = ssl.create_default_context(cafile=str(tls_server.ca))
    made = httpx.post(f"{tls_server.url}/keys", json={"project": "e2b-tls"}, headers=auth(), verify=verify)
    assert made.status_code == 201, made.text
    key = made.json()
    try:
        res = _run(tls_server, key["key"], trust=True)
        assert res.returncode == 0 and res.stdout.startswith("OK "), res.stderr[-3000:]
        untrusted = _run(tls_server, key["key"], trust=False)
        assert untrusted.returncode != 0 and "certificate" in untrusted.stderr.lower(), untrusted.stderr[-2000:]
        left = httpx.get(f"{tls_server.url}/v1/namespaces/e2b-tls/sandboxes", headers=auth(), verify=verify)
        assert left.json()["sandboxes"] == [], left.text  # the script's kill went through
    finally:
        httpx.delete(f"{tls_server.url}/keys/{key['id']}", headers=auth(), verify=verify)
