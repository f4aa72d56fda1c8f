"""``/metrics``: admin keys only; the series move with what the server does."""

from __future__ import annotations

import re

import httpx

from ..api.conftest import ServerProcess
from ..keys import auth
from .conftest import Project


def _value(text: str, series: str) -> float:
    """The value of one series line (labels as printed), 0 if absent."""
    m = re.search(rf"^{re.escape(series)} ([0-9.e+-]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def test_metrics_needs_an_admin_key(server: ServerProcess, project: Project):
    assert httpx.get(f"{server.url}/metrics").status_code == 401
    assert httpx.get(f"{server.url}/metrics", headers={"Authorization": "Bearer nonsense"}).status_code == 401
    member = httpx.get(f"{server.url}/metrics", headers=project.headers())
    assert member.status_code == 403 and member.json()["code"] == "ADMIN_REQUIRED"


def test_metrics_follow_creates_and_proxy_traffic(server: ServerProcess, project: Project):
    before = httpx.get(f"{server.url}/metrics", headers=auth()).text
    creates = _value(before, 'cellbox_operation_seconds_count{operation="create",outcome="ok"}')
    sid = project.create()
    proxy = f"http://127.0.0.1:{server.proxy_port}"
    assert httpx.get(f"{proxy}/api/v1/health", headers={"Host": f"{sid}.local", **project.headers()}).status_code == 200
    assert httpx.get(f"{proxy}/api/v1/health", headers={"Host": "nosuchsandbox.local", **project.headers()}
                     ).status_code == 404
    resp = httpx.get(f"{server.url}/metrics", headers=auth())
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    text = resp.text
    assert _value(text, f'cellbox_sandboxes{{project="{project.name}",state="running"}}') == 1
    assert _value(text, f'cellbox_project_usage{{project="{project.name}",resource="running_sandboxes"}}') == 1
    assert _value(text, 'cellbox_operation_seconds_count{operation="create",outcome="ok"}') == creates + 1
    assert _value(text, "cellbox_proxy_requests_total") >= _value(before, "cellbox_proxy_requests_total") + 2
    assert _value(text, 'cellbox_proxy_errors_total{status="404"}') >= 1
    assert "cellbox_warm_pool_ready" in text
