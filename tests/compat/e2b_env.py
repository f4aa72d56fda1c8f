"""Fixtures for the E2B SDK tests: per-test projects with their own keys, the SDK's
settings pointed at the shared live server, and cleanup of every sandbox made.

The SDK is configured only through its own environment variables, as a user would:
``E2B_API_URL`` (our ``/e2b`` prefix), ``E2B_SANDBOX_URL`` (the proxy: envd traffic is
routed by the ``E2b-Sandbox-Id`` header the SDK sends), ``E2B_DOMAIN`` and
``E2B_API_KEY`` (a cellbox member key). Plain HTTP on loopback; TLS is
``test_e2b_tls.py``.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from ..keys import auth
from ..sdk.live_server import LiveServer


@dataclass
class Project:
    name: str
    key: str
    key_id: str


@dataclass
class E2BEnv:
    server: LiveServer
    a: Project
    b: Project
    made: list[tuple[str, str]] = field(default_factory=list)  # (project, sandbox id)

    @property
    def api_url(self) -> str:
        return f"{self.server.api_url}/e2b"

    @property
    def sandbox_url(self) -> str:
        return f"http://localhost:{self.server.proxy_port}"

    def track(self, sbx, project: Project | None = None):
        self.made.append(((project or self.a).name, sbx.sandbox_id))
        return sbx

    def cleanup(self) -> None:
        """Delete every sandbox made (killed ones answer 404/410), then prove none still
        runs: the project's live list is empty."""
        for project, sid in self.made:
            httpx.delete(f"{self.server.api_url}/v1/namespaces/{project}/sandboxes/{sid}", headers=auth(), timeout=60)
        for project in {p for p, _ in self.made}:
            live = httpx.get(f"{self.server.api_url}/v1/namespaces/{project}/sandboxes", headers=auth(), timeout=30)
            assert live.json()["sandboxes"] == [], f"left running in {project}: {live.text}"


def _project(server: LiveServer, prefix: str) -> Project:
    name = f"{prefix}-{secrets.token_hex(3)}"
    resp = httpx.post(f"{server.api_url}/keys", json={"project": name}, headers=auth(), timeout=30)
    assert resp.status_code == 201, resp.text
    doc = resp.json()
    return Project(name, doc["key"], doc.get("id") or doc.get("key_id") or doc["key"].split("_")[1])


@pytest.fixture
def e2b_env(live_server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[E2BEnv]:
    env = E2BEnv(live_server, _project(live_server, "e2b-a"), _project(live_server, "e2b-b"))
    monkeypatch.setenv("E2B_API_URL", env.api_url)
    monkeypatch.setenv("E2B_SANDBOX_URL", env.sandbox_url)
    monkeypatch.setenv("E2B_DOMAIN", "local")
    monkeypatch.setenv("E2B_API_KEY", env.a.key)
    monkeypatch.delenv("E2B_DEBUG", raising=False)
    try:
        yield env
    finally:
        env.cleanup()
        for p in (env.a, env.b):
            httpx.delete(f"{live_server.api_url}/keys/{p.key_id}", headers=auth(), timeout=30)
