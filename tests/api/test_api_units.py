"""The API's pure parts, without root or sandboxes: models, errors, rendering, cursors,
owner identity, and the app's error mapping over a fake service."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from cellbox.api import create_app, render
from cellbox.api import errors as api_errors
from cellbox.api.models import CreateSandboxRequest, UpdateSandboxRequest
from cellbox.api.routes import _budget
from cellbox.errors import Conflict, InvalidRequest, NotFound
from cellbox.manager import owner
from cellbox.manager.records import SandboxRecord, Status
from cellbox.manager.service import Page, _decode_cursor, _encode_cursor


def _rec(**kw: Any) -> SandboxRecord:
    base = dict(id="a" * 20 + "1", namespace="default", image="cellbox/debian", cpus=1.0, memory_mb=512, disk_mb=2048)
    return SandboxRecord(**{**base, **kw})


def test_create_request_maps_to_spec_with_sdk_defaults():
    opts = CreateSandboxRequest.model_validate(
        {"resources": {"cpus": 2, "memory_mb": 4096}, "name": "my-sbx", "exposed_ports": [8080, 80, 8080],
         "allow_unauthenticated_proxy_access": True, "entrypoint": ["sleep", "inf"], "unknown": 1,
         "network": {"allow_internet_access": True}}
    ).to_options("ns1")
    assert (opts.spec.cpus, opts.spec.memory_mb, opts.spec.disk_mb) == (2.0, 4096, None)
    assert (opts.spec.name, opts.spec.namespace) == ("my-sbx", "ns1")
    assert opts.exposed_ports == (80, 8080) and opts.allow_unauthenticated_access is True
    assert opts.entrypoint == ("sleep", "inf") and opts.auto_resume is True
    empty = CreateSandboxRequest().to_options("default")
    assert (empty.spec.cpus, empty.spec.memory_mb, empty.spec.image) == (1.0, 1024, None)


@pytest.mark.parametrize("body", [
    {"resources": {"cpus": 0}}, {"resources": {"cpus": float("nan")}}, {"timeout_secs": -1},
    {"exposed_ports": [9501]}, {"name": "UPPER"}, {"name": "x" * 21}, {"auto_resume": False}, {"wait": "maybe"},
])
def test_create_request_rejects(body):
    with pytest.raises(ValidationError):
        CreateSandboxRequest.model_validate(body)


@pytest.mark.parametrize("body", [
    {"file_systems": [{"file_system_id": "f"}]}, {"resources": {"gpus": [{"count": 1, "model": "A10"}]}},
])
def test_unsupported_create_fields(body):
    with pytest.raises(InvalidRequest) as err:
        CreateSandboxRequest.model_validate(body).to_options("default")
    assert err.value.code == "NOT_SUPPORTED"


def test_patch_network_is_tristate():
    assert UpdateSandboxRequest.model_validate({"name": "a-b"}).to_changes().name == "a-b"
    keep = UpdateSandboxRequest.model_validate({"name": "a-b"}).to_changes()
    assert keep.network_set is False
    clear = UpdateSandboxRequest.model_validate({"network": None}).to_changes()
    assert clear.network_set is True and clear.network is None
    replace = UpdateSandboxRequest.model_validate({"network": {"deny_out": ["10.0.0.0/8"]}}).to_changes()
    assert replace.network_set and [str(n) for n in replace.network.deny.nets4] == ["10.0.0.0/8"]
    with pytest.raises(InvalidRequest, match="network.allow_out"):
        UpdateSandboxRequest.model_validate({"network": {"allow_out": ["10.0.0.0/99"]}}).to_changes()
    # Resources are a live resize now (issue 14), never mixed with other fields.
    assert UpdateSandboxRequest.model_validate({"resources": {"cpus": 1}}).to_changes().resize.cpus == 1
    with pytest.raises(InvalidRequest, match="cannot be combined with name"):
        UpdateSandboxRequest.model_validate({"resources": {"cpus": 1}, "name": "a-b"}).to_changes()


def test_create_network_becomes_a_policy():
    opts = CreateSandboxRequest.model_validate({"network": {"allow_internet_access": False}}).to_options("default")
    assert opts.spec.network is not None and opts.spec.network.default_deny
    unrestricted = CreateSandboxRequest.model_validate({"network": {"allow_internet_access": True}})
    assert unrestricted.to_options("default").spec.network is None


def test_validation_message_names_the_field():
    try:
        CreateSandboxRequest.model_validate({"resources": {"cpus": "x"}})
    except ValidationError as exc:
        msg = api_errors.validation_message([dict(e, loc=("body", *e["loc"])) for e in exc.errors()])
    assert msg.startswith("resources.cpus: ")
    bad_json = {"type": "json_invalid", "loc": ("body", 3), "msg": "x", "ctx": {"error": "Expecting value"}}
    assert api_errors.validation_message([bad_json]) == "body: malformed JSON: Expecting value"


def test_render_has_no_alias_pairs_and_required_fields():
    info = render.sandbox_info(_rec(status=Status.RUNNING), "http://localhost:9443")
    assert "sandbox_id" not in info and info["id"] and info["sandbox_url"] == "http://localhost:9443"
    assert info["resources"] == {"cpus": 1.0, "memory_mb": 512, "disk_mb": 2048}
    created = render.create_response(_rec(status=Status.PENDING), "u")
    assert "state" not in created and created["status"] == "pending" and created["sandbox_url"] is None
    failed = render.sandbox_info(_rec(status=Status.FAILED, error="boom"), "u")
    assert failed["error_details"] == {"message": "boom"} and failed["sandbox_url"] is None


def test_cursor_round_trip_and_rejects_garbage():
    rec = _rec(created_at=1234)
    assert _decode_cursor(_encode_cursor(rec)) == (1234, rec.id)
    for bad in ("", "zzz", "bm90LWEtY3Vyc29y"):
        with pytest.raises(InvalidRequest):
            _decode_cursor(bad)


def test_budget_is_timeout_minus_grace():
    assert _budget(None, None) is None
    assert _budget("300000", "5000") == 295.0
    assert _budget("1000", "5000") == 0.0
    assert _budget("soon", None) is None


def test_owner_identity():
    me = owner.this_process()
    assert me.startswith(f"{os.getpid()}:") and owner.is_alive(me) and owner.managed_here(me)
    assert not owner.is_alive("999999999:0") and owner.managed_here("999999999:0")
    assert not owner.is_alive(None) and not owner.is_alive("garbage")
    parent = f"{os.getppid()}:0"  # alive PID, wrong start time: a recycled PID is not its owner
    assert not owner.is_alive(parent)
    assert _rec().owner == me  # stamped on creation


class FakeService:
    proxy_url = "http://localhost:9443"

    def get(self, ref: str, namespace: str) -> SandboxRecord:
        raise NotFound(f"sandbox {ref!r} not found", code="SANDBOX_NOT_FOUND")

    def list(self, namespace: str, **kw: Any) -> Page:
        return Page([_rec(namespace=namespace)], next_cursor="abc")

    async def create(self, opts: Any, **kw: Any) -> SandboxRecord:
        raise Conflict("taken", code="NAME_TAKEN")

    async def delete(self, ref: str, namespace: str) -> SandboxRecord:
        raise RuntimeError("a bug")


class SyncASGI:
    """Just enough of a sync client over the app in-process (starlette's TestClient
    warns about its httpx use)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def request(self, method: str, url: str, **kw: Any) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
                return await c.request(method, url, **kw)

        return asyncio.run(go())

    def get(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("GET", url, **kw)

    def post(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("POST", url, **kw)

    def delete(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("DELETE", url, **kw)


@pytest.fixture
def client() -> SyncASGI:
    return SyncASGI(create_app(FakeService(), door=None))  # type: ignore[arg-type]


def test_app_maps_errors(client):
    r = client.get("/v1/namespaces/team-a/sandboxes")
    assert r.status_code == 200 and r.json()["next_cursor"] == "abc"
    assert r.json()["sandboxes"][0]["namespace"] == "team-a"
    assert client.get("/sandboxes").json()["sandboxes"][0]["namespace"] == "default"
    assert client.get("/sandboxes/x").json() == {"error": "sandbox 'x' not found", "code": "SANDBOX_NOT_FOUND"}
    assert client.post("/sandboxes", json={"name": "a"}).status_code == 409
    r = client.post("/sandboxes", content=b"{", headers={"content-type": "text/plain"})
    assert r.status_code == 400 and r.json()["code"] == "INVALID_REQUEST" and "JSON" in r.json()["error"]
    r = client.post("/sandboxes", content=b"x" * (2 << 20))
    assert r.status_code == 413 and r.json()["code"] == "PAYLOAD_TOO_LARGE"
    r = client.get("/sandboxes", params={"limit": 0})
    assert r.status_code == 400 and r.json()["error"].startswith("limit: ")
    r = client.delete("/sandboxes/x")
    assert r.status_code == 500 and r.json() == {"error": "internal error: RuntimeError", "code": "INTERNAL"}
    assert client.get("/v1/namespaces/__warm__/sandboxes").status_code == 400
