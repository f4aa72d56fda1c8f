"""The proxy serving a request with an in-process ASGI app (``proxy/local_app.py``).

A real ``SandboxProxy`` on a loopback port whose resolver answers ``LocalApp(app)``;
plain HTTP clients against it: bodies both ways, streams leaving as they come,
keep-alive, a client that goes away cancelling the app, and an app that fails being
a 500 with the proxy's JSON error (or a cut connection once its head has left).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

import httpx
import pytest

from cellbox.proxy import SandboxProxy
from cellbox.proxy.local_app import LocalApp

pytestmark = pytest.mark.timeout(60)
SID = "a" * 20 + "1"


class App:
    """An ASGI app with a route per behaviour under test; records what happened."""

    def __init__(self) -> None:
        self.cancelled = threading.Event()
        self.seen: list[str] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope["path"]
        self.seen.append(f"{scope['method']} {path}?{scope['query_string'].decode()}")
        if path == "/echo":
            body = b""
            while True:
                msg = await receive()
                body += msg.get("body", b"")
                if not msg.get("more_body"):
                    break
            await send({"type": "http.response.start", "status": 201, "headers": [(b"x-len", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body[::-1]})
        elif path == "/stream":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
            for i in range(3):
                await send({"type": "http.response.body", "body": f"chunk {i}\n".encode(), "more_body": True})
                await asyncio.sleep(0.2)
            await send({"type": "http.response.body", "body": b""})
        elif path == "/forever":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"started\n", "more_body": True})
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        elif path == "/fail":
            raise RuntimeError("a bug in the app")
        elif path == "/fail-late":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"half", "more_body": True})
            raise RuntimeError("a bug after the head")


@pytest.fixture(scope="module")
def served() -> Any:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    app = App()

    async def resolve(ref: str, port: int) -> tuple[Any, int, str]:
        return LocalApp(app), 0, SID

    proxy = SandboxProxy(resolve, lambda sid: None, connect_timeout=2)
    asyncio.run_coroutine_threadsafe(proxy.start("127.0.0.1", 0), loop).result(10)
    try:
        yield f"http://127.0.0.1:{proxy.port}", app, proxy.port
    finally:
        asyncio.run_coroutine_threadsafe(proxy.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


HEADERS = {"E2b-Sandbox-Id": SID, "E2b-Sandbox-Port": "49983"}


def test_body_both_ways_and_keep_alive(served: Any) -> None:
    url, app, _ = served
    with httpx.Client(base_url=url, headers=HEADERS, timeout=10) as client:
        for size in (0, 5, 300_000):  # the last arrives in many pieces
            resp = client.post("/echo?q=1", content=bytes(range(256)) * (size // 256) + b"x" * (size % 256))
            assert resp.status_code == 201 and resp.headers["x-len"] == str(size)
            assert len(resp.content) == size
        assert "POST /echo?q=1" in app.seen


def test_a_stream_leaves_as_it_comes(served: Any) -> None:
    url, _, _ = served
    arrived: list[float] = []
    with httpx.Client(base_url=url, headers=HEADERS, timeout=10) as client:
        t0 = time.monotonic()
        with client.stream("GET", "/stream") as resp:
            for _line in resp.iter_lines():
                arrived.append(time.monotonic() - t0)
    assert len(arrived) == 3
    assert arrived[0] < 0.15 and arrived[2] - arrived[0] > 0.3  # not buffered until the end


def test_a_client_that_goes_cancels_the_app(served: Any) -> None:
    _, app, port = served
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(f"GET /forever HTTP/1.1\r\nHost: x\r\nE2b-Sandbox-Id: {SID}\r\nE2b-Sandbox-Port: 49983\r\n\r\n".encode())
    got = b""
    while b"started" not in got:
        got += sock.recv(4096)
    sock.close()
    assert app.cancelled.wait(10), "the app kept running after its client went"


def test_an_app_that_fails_is_a_500_not_a_hang(served: Any) -> None:
    url, _, _ = served
    with httpx.Client(base_url=url, headers=HEADERS, timeout=10) as client:
        resp = client.get("/fail")
        assert resp.status_code == 500 and resp.json()["code"] == "INTERNAL"
        with pytest.raises(httpx.RemoteProtocolError):  # cut: a FIN would pass "half" off as whole
            client.get("/fail-late").read()
        assert client.post("/echo", content=b"ok").content == b"ko"  # the proxy still serves
