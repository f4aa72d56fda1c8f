"""Exposed-port URLs and ``sandbox_url`` for a remote client (issue 12, gap 5).

Before: ``ingress_endpoint`` was never answered (the tensorlake SDK's
``SandboxInfo.url_for_port(8080)`` was ``None``) and a server listening on 0.0.0.0
told clients ``sandbox_url: http://0.0.0.0:9443``, which no other machine can reach.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tensorlake.sandbox.models import SandboxInfo

from cellbox.api.public_urls import resolve

from ..api.conftest import SDK_CREATE_HEADERS, Api, ServerProcess
from ..keys import auth

pytestmark = pytest.mark.root
DOMAIN = "sbx.test"  # a reserved TLD: never resolves; requests below connect to 127.0.0.1 with its Host


def test_public_urls_from_the_options():
    assert resolve(host="127.0.0.1", proxy_port=9443, tls=False, public_proxy_url=None, proxy_domain=None
                   ).proxy_url == "http://localhost:9443"
    anywhere = resolve(host="0.0.0.0", proxy_port=9443, tls=True, public_proxy_url=None, proxy_domain=None)
    assert anywhere.proxy_url == f"https://{socket.getfqdn()}:9443" and anywhere.ingress_endpoint is None
    dom = resolve(host="0.0.0.0", proxy_port=443, tls=True, public_proxy_url=None, proxy_domain=DOMAIN)
    assert dom.proxy_url == f"https://{DOMAIN}" and dom.ingress_endpoint == f"https://{DOMAIN}"
    assert dom.port_url("abc", 8080) == f"https://8080-abc.{DOMAIN}"
    behind = resolve(host="10.0.0.1", proxy_port=9443, tls=False, public_proxy_url="https://edge.example:8443/",
                     proxy_domain=DOMAIN)
    assert behind.proxy_url == "https://edge.example:8443" and behind.ingress_endpoint == f"https://{DOMAIN}:8443"


@pytest.fixture(scope="module")
def domain_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path_factory.mktemp("urls") / "server.log")
    srv.extra_env = {"CELLBOX_PROXY_DOMAIN": DOMAIN}
    srv.start()
    try:
        yield srv
    finally:
        assert srv.stop() == 0, srv.log_tail()


def test_exposed_port_urls_are_returned_and_route(domain_server: ServerProcess, tmp_path: Path):
    made: list[str] = []
    api = Api(domain_server, "default", made)
    try:
        created = api.create({"exposed_ports": [8080]}, headers=SDK_CREATE_HEADERS)
        sid = created["sandbox_id"]
        base = f"http://{DOMAIN}:{domain_server.proxy_port}"
        want = f"http://8080-{sid}.{DOMAIN}:{domain_server.proxy_port}"
        assert created["sandbox_url"] == base and created["ingress_endpoint"] == base
        assert created["port_urls"] == {"8080": want}
        info = api.request("GET", f"/sandboxes/{sid}").json()
        assert info["port_urls"] == {"8080": want}
        listed = api.request("GET", "/sandboxes").json()["sandboxes"]
        assert [s["ingress_endpoint"] for s in listed if s["id"] == sid] == [base]
        # The tensorlake SDK's own model derives the same URL from what we answer.
        assert SandboxInfo.model_validate(info).url_for_port(8080) == want
        # And the URL routes: a server on 8080 in the sandbox answers through Host: 8080-<id>.<domain>.
        proxy = f"http://127.0.0.1:{domain_server.proxy_port}"
        started = httpx.post(f"{proxy}/api/v1/processes", headers={"Host": f"{sid}.{DOMAIN}", **auth()},
                             json={"command": "python3", "args": ["-m", "http.server", "8080"]}, timeout=30)
        assert started.status_code == 201, started.text
        deadline = time.monotonic() + 30
        while (got := httpx.get(proxy + "/", headers={"Host": want.split("//")[1], **auth()}, timeout=30)).status_code != 200:
            assert time.monotonic() < deadline, got.text
            time.sleep(0.2)
        assert "Directory listing" in got.text
        # Unexposed ports get no URL.
        assert api.request("PATCH", f"/sandboxes/{sid}", json={"exposed_ports": []}).json()["port_urls"] == {}
    finally:
        for url in made:
            httpx.delete(url, headers=auth(), timeout=120)
