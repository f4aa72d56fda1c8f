"""Remote use: a client on another machine reaches the server over TLS with a key.

"Another machine" is a network namespace of this test's own, joined to the host by a
veth pair on addresses of TEST-NET-2 (a /30 nothing else uses); the server listens on
the host's end only. The cellbox CLI, the cellbox SDK and the tensorlake SDK run in
the namespace and trust the test's own CA (``SSL_CERT_FILE``), nothing else.
"""

from __future__ import annotations

import os
import shutil
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

from ..conftest import _missing_requirements
from ..keys import auth
from ..api.conftest import ServerProcess, free_port

pytestmark = pytest.mark.root

NS = "cbtest-door"
VETH = "tdoor-h"
HOST_IP = "198.51.100.249"
CLIENT_IP = "198.51.100.250"
VENV = Path(sys.executable).parent


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


# `ip netns exec` bind-mounts /etc/netns/NS/<entry> over /etc/<entry> for the command it
# runs: the client's /etc/ssl holds only the test CA, so clients that read the system
# store trust it alone (the tensorlake SDK reads neither it nor SSL_CERT_FILE: it
# trusts its built-in roots only, test_door_tl_tls.py).
NETNS_ETC = Path("/etc/netns") / NS


def _remove_netns() -> None:
    subprocess.run(["ip", "link", "del", VETH], capture_output=True)
    subprocess.run(["ip", "netns", "del", NS], capture_output=True)
    shutil.rmtree(NETNS_ETC, ignore_errors=True)


@pytest.fixture(scope="module")
def remote_net() -> Iterator[None]:
    _remove_netns()  # leftovers of an interrupted run
    try:
        _ip("netns", "add", NS)
        _ip("link", "add", VETH, "type", "veth", "peer", "name", "eth0", "netns", NS)
        _ip("addr", "add", f"{HOST_IP}/30", "dev", VETH)
        _ip("link", "set", VETH, "up")
        _ip("-n", NS, "addr", "add", f"{CLIENT_IP}/30", "dev", "eth0")
        _ip("-n", NS, "link", "set", "eth0", "up")
        _ip("-n", NS, "link", "set", "lo", "up")
        yield
    finally:
        _remove_netns()


class TLSServer(ServerProcess):
    """``cellbox server`` on the veth's host address, with TLS from the test's own CA."""

    def __init__(self, log_path: Path, tls_dir: Path) -> None:
        super().__init__(log_path)
        self.ca, self.cert, self.key = make_self_signed(tls_dir, [HOST_IP, "localhost"])
        (NETNS_ETC / "ssl" / "certs").mkdir(parents=True, exist_ok=True)
        shutil.copy(self.ca, NETNS_ETC / "ssl" / "certs" / "ca-certificates.crt")
        self.url = f"https://{HOST_IP}:{self.api_port}"
        self.proxy_url = f"https://{HOST_IP}:{self.proxy_port}"

    def start(self, timeout: float = 90) -> None:
        env = {**os.environ, "CELLBOX_WARM_POOL": "0"}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(VENV / "cellbox"), "server", "--api-listen", f"{HOST_IP}:{self.api_port}",
                 "--proxy-listen", f"{HOST_IP}:{self.proxy_port}", "--tls-cert", str(self.cert),
                 "--tls-key", str(self.key), "--public-proxy-url", self.proxy_url],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log_tail()
            try:
                if httpx.get(f"{self.url}/health", verify=ssl.create_default_context(cafile=str(self.ca)), timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"TLS server did not answer:\n{self.log_tail()}")


@pytest.fixture(scope="module")
def tls_server(remote_net: None, settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TLSServer]:
    if reason := _missing_requirements(settings):
        pytest.skip(reason)
    tmp = tmp_path_factory.mktemp("tls")
    srv = TLSServer(tmp / "server.log", tmp / "tls")
    srv.start()
    try:
        yield srv
    finally:
        assert srv.stop() == 0, srv.log_tail()


def test_a_network_address_without_tls_is_refused(remote_net: None, tmp_path: Path):
    port = free_port()
    res = subprocess.run([str(VENV / "cellbox"), "server", "--api-listen", f"{HOST_IP}:{port}",
                          "--proxy-listen", f"{HOST_IP}:{free_port()}"],
                         capture_output=True, text=True, timeout=60, env={**os.environ, "CELLBOX_WARM_POOL": "0"})
    assert res.returncode != 0 and "without TLS" in res.stderr, res.stderr[-2000:]


def _in_netns(server: TLSServer, code: str, key: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """Run Python in the client namespace: only the test CA trusted, only ``key`` known."""
    env = {"PATH": os.environ["PATH"], "HOME": "/nonexistent", "SSL_CERT_FILE": str(server.ca),
           "CELLBOX_API_URL": server.url, "CELLBOX_API_KEY": key, "TENSORLAKE_API_KEY": key,
           "CELLBOX_DATA_DIR": "/nonexistent"}  # no admin.key to fall back on: the key is the only way in
    return subprocess.run(["ip", "netns", "exec", NS, str(VENV / "python"), "-c", textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=timeout, env=env)


def _member_key(server: TLSServer) -> str:
    resp = httpx.post(f"{server.url}/keys", json={"project": "remote-test"}, headers=auth(), verify=ssl.create_default_context(cafile=str(server.ca)))
    assert resp.status_code == 201, resp.text
    return str(resp.json()["key"])


def test_sdk_cli_and_tensorlake_from_another_netns_over_tls(tls_server: TLSServer):
    key = _member_key(tls_server)
    # Without the CA the client refuses the server; without the key the server refuses the client.
    res = _in_netns(tls_server, f"""
        import httpx, ssl
        try:
            httpx.get("{tls_server.url}/health", verify=ssl.create_default_context(cafile=None, capath="/nonexistent"))
            print("TRUSTED")
        except httpx.ConnectError as exc:
            print("UNTRUSTED", exc)
        print(httpx.get("{tls_server.url}/sandboxes").status_code)
    """, key)
    assert res.stdout.split()[0] == "UNTRUSTED" and res.stdout.split()[-1] == "401", res.stdout + res.stderr
    # Our SDK: create, run a command through the proxy (sandbox_url is the public https URL), delete.
    res = _in_netns(tls_server, """
        from cellbox.sdk import SandboxClient
        with SandboxClient() as c:
            info = c.create(memory_mb=256, timeout_secs=300)
            print("URL", info.sandbox_url)
            sbx = c.connect(info.id)
            print("OUT", sbx.run("echo", ["hello-over-tls"]).stdout.strip())
            c.delete(info.id)
    """, key)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"URL {tls_server.proxy_url}" in res.stdout and "OUT hello-over-tls" in res.stdout, res.stdout
    # The CLI, same environment.
    cli = subprocess.run(["ip", "netns", "exec", NS, str(VENV / "cellbox"), "whoami"], capture_output=True, text=True,
                         timeout=60, env={"PATH": os.environ["PATH"], "HOME": "/nonexistent",
                                          "SSL_CERT_FILE": str(tls_server.ca), "CELLBOX_API_URL": tls_server.url,
                                          "CELLBOX_DATA_DIR": "/nonexistent"} | {"CELLBOX_API_KEY": key})
    assert cli.returncode == 0 and '"remote-test"' in cli.stdout, cli.stdout + cli.stderr


class InsecureServer(ServerProcess):
    """``cellbox server --insecure`` on the veth's host address: plain HTTP, keys still needed."""

    def __init__(self, log_path: Path) -> None:
        super().__init__(log_path)
        self.url = f"http://{HOST_IP}:{self.api_port}"

    def start(self, timeout: float = 90) -> None:
        env = {**os.environ, "CELLBOX_WARM_POOL": "0"}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(VENV / "cellbox"), "server", "--api-listen", f"{HOST_IP}:{self.api_port}",
                 "--proxy-listen", f"{HOST_IP}:{self.proxy_port}", "--insecure"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log_tail()
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server did not answer:\n{self.log_tail()}")


def test_tensorlake_sdk_from_another_netns_with_a_key(remote_net: None, settings: Settings, tmp_path: Path):
    """The tensorlake SDK (0.5.163) verifies TLS against its built-in Mozilla roots only
    (compiled into its native module: no SSL_CERT_FILE, no system store; shown by
    test_door_tl_tls.py), so a custom CA cannot work for it; over TLS it needs a
    publicly trusted certificate.
    Here it crosses the network to an ``--insecure`` listener, with its key."""
    if reason := _missing_requirements(settings):
        pytest.skip(reason)
    srv = InsecureServer(tmp_path / "server.log")
    srv.start()
    try:
        key = httpx.post(f"{srv.url}/keys", json={"project": "remote-tl"}, headers=auth()).json()["key"]
        code = f"""
            import os
            os.environ["TENSORLAKE_SANDBOX_API_URL"] = "{srv.url}"  # flat paths for a non-localhost server
            from tensorlake.sandbox import Sandbox
            sbx = Sandbox.create(api_url="{srv.url}", memory_mb=256)
            try:
                print("OUT", sbx.run("echo", ["tensorlake-remote"]).stdout.strip())
            finally:
                sbx.terminate()
        """
        env = {"PATH": os.environ["PATH"], "HOME": "/nonexistent", "TENSORLAKE_API_KEY": key,
               "CELLBOX_DATA_DIR": "/nonexistent"}
        res = subprocess.run(["ip", "netns", "exec", NS, str(VENV / "python"), "-c", textwrap.dedent(code)],
                             capture_output=True, text=True, timeout=240, env=env)
        assert "OUT tensorlake-remote" in res.stdout, res.stdout[-3000:] + res.stderr[-3000:]
        # Without the key it gets nowhere.
        env["TENSORLAKE_API_KEY"] = "cbx_" + "0" * 16 + "_" + "0" * 64
        env["TENSORLAKE_MAX_RETRIES"] = "0"
        res = subprocess.run(["ip", "netns", "exec", NS, str(VENV / "python"), "-c", textwrap.dedent(code)],
                             capture_output=True, text=True, timeout=240, env=env)
        said = res.stdout + res.stderr
        assert "OUT" not in res.stdout and ("401" in said or "nauthori" in said), said[-2000:]
    finally:
        assert srv.stop() == 0, srv.log_tail()
