"""Sandbox proxy end to end: two real agents as two sandboxes, a real proxy in front.

The resolver is a dict (the proxy's injection point, not a mock of the proxy). A
plain HTTP server and a small WebSocket echo server stand in for user ports; the
proxy runs on a background event loop and is driven with httpx and raw sockets,
as the tensorlake SDK and CLI would drive it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import h11
import httpx
import pytest
import wsproto
import wsproto.events as ws_events

from cellbox.agent.harness import AgentProcess
from cellbox.errors import Conflict, NotFound
from cellbox.proxy import AGENT_PORT, SandboxProxy
from cellbox.proxy.inflight import InFlight

pytestmark = pytest.mark.timeout(60)
T = TypeVar("T")

ALPHA_ID = "a" * 20 + "1"
BETA_ID = "b" * 20 + "2"
USER_PORT = 8080  # as the sandbox sees it; mapped to the test's HTTP server
WS_PORT = 7000  # mapped to the test's WebSocket echo server


# ------------------------------------------------------------------- helpers
class LoopThread:
    """An asyncio loop in a thread, so sync tests can drive the async proxy."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@dataclass
class Box:
    id: str
    name: str
    ports: dict[int, int]  # port in the sandbox -> real port on 127.0.0.1
    running: bool = True


@dataclass
class World:
    proxy: SandboxProxy
    lt: LoopThread
    alpha: AgentProcess
    beta: AgentProcess
    boxes: dict[str, Box]
    activity: Counter[str] = field(default_factory=Counter)
    resolves: list[tuple[str, int]] = field(default_factory=list)
    inflight: InFlight = field(default_factory=InFlight)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.proxy.port}"

    def client(self, **kw: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kw)

    def tasks(self) -> int:
        async def count() -> int:
            return len(asyncio.all_tasks()) - 1

        return self.lt.run(count())


def wait_for(predicate: Any, timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"condition not met in {timeout}s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tcp_states(port: int) -> list[str]:
    """States of the IPv4 sockets whose local port is ``port`` (01 = ESTABLISHED, 08 = CLOSE_WAIT)."""
    states = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        if int(local.split(":")[1], 16) == port:
            states.append(state)
    return states


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class RawHTTP:
    """One raw keep-alive connection to the proxy; responses parsed with h11.

    h11 cannot pipeline as a client, so each response gets a fresh parser fed with
    the bytes the previous one left over.
    """

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=15)
        self.methods: list[str] = []
        self.leftover = b""

    def send(self, raw: bytes) -> None:
        self.sock.sendall(raw)

    def request(self, method: str, target: str, *extra: str, body: bytes = b"") -> None:
        lines = [f"{method} {target} HTTP/1.1", *extra, f"Content-Length: {len(body)}", "", ""]
        self.methods.append(method)
        self.send("\r\n".join(lines).encode() + body)

    def response(self) -> tuple[int, dict[str, str], bytes]:
        parser = h11.Connection(h11.CLIENT)
        parser.send(h11.Request(method=self.methods.pop(0), target="/", headers=[("host", "x")]))
        parser.send(h11.EndOfMessage())
        if self.leftover:  # (b"" would mean EOF to h11)
            parser.receive_data(self.leftover)
        status, hdrs, body = 0, {}, b""
        while True:
            event = parser.next_event()
            if event is h11.NEED_DATA:
                parser.receive_data(self.sock.recv(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
                hdrs = {k.decode(): v.decode() for k, v in event.headers}
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                self.leftover = parser.trailing_data[0]
                return status, hdrs, body
            elif not isinstance(event, h11.InformationalResponse):
                raise AssertionError(f"unexpected {event!r}")

    def closed(self) -> bool:
        """True once the proxy closes the connection (whatever it still sends first)."""
        try:
            while self.sock.recv(65536):
                pass
            return True
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.sock.close()


# ----------------------------------------------------------- user-port servers
class UserPortHandler(BaseHTTPRequestHandler):
    """A "user port" inside the sandbox: echoes what it got; can misbehave on request."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/die":  # promises 1000 bytes, sends 10, closes
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789")
            self.wfile.flush()
            self.close_connection = True
            return
        if self.path == "/hangup":  # no response at all
            self.close_connection = True
            return
        body = json.dumps({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


async def ws_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """WebSocket echo server (wsproto): the upstream for the upgrade test."""
    ws = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
    try:
        while True:
            data = await reader.read(65536)
            ws.receive_data(data or None)
            for event in ws.events():
                if isinstance(event, ws_events.Request):
                    writer.write(ws.send(ws_events.AcceptConnection()))
                elif isinstance(event, ws_events.Message):
                    writer.write(ws.send(type(event)(data=event.data)))
                elif isinstance(event, ws_events.CloseConnection):
                    writer.write(ws.send(event.response()))
                    await writer.drain()
                    return
            await writer.drain()
            if not data:
                return
    finally:
        writer.close()


# -------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    roots = {n: tmp_path_factory.mktemp(n) for n in ("alpha", "beta")}
    for name, root in roots.items():
        (root / "who").write_text(name)
    lt = LoopThread()
    http_server = ThreadingHTTPServer(("127.0.0.1", 0), UserPortHandler)
    http_server.daemon_threads = True
    threading.Thread(target=http_server.serve_forever, daemon=True).start()
    ws_server = lt.run(asyncio.start_server(ws_echo, "127.0.0.1", 0))
    ws_port = ws_server.sockets[0].getsockname()[1]
    dead_port = free_port()

    with AgentProcess("--subreaper", root=str(roots["alpha"])) as alpha, AgentProcess(root=str(roots["beta"])) as beta:
        boxes = {
            ALPHA_ID: Box(ALPHA_ID, "alpha", {AGENT_PORT: alpha.port, USER_PORT: http_server.server_port, WS_PORT: ws_port}),
            BETA_ID: Box(BETA_ID, "beta", {AGENT_PORT: beta.port}),
            "c" * 21: Box("c" * 21, "sleepy", {AGENT_PORT: alpha.port}, running=False),
            "d" * 21: Box("d" * 21, "dead", {AGENT_PORT: dead_port}),
        }
        activity: Counter[str] = Counter()
        resolves: list[tuple[str, int]] = []

        async def resolve(ref: str, port: int) -> tuple[str, int, str]:
            resolves.append((ref, port))
            if ref == "buggy":
                raise RuntimeError("resolver bug")
            if ref == "slow":  # e.g. a suspended sandbox being resumed
                await asyncio.sleep(0.5)
                ref = "alpha"
            box = boxes.get(ref) or next((b for b in boxes.values() if b.name == ref), None)
            if box is None:
                raise NotFound(f"sandbox {ref!r} not found", code="SANDBOX_NOT_FOUND")
            if not box.running:
                raise Conflict(f"sandbox {box.id} is suspended, not running", code="SANDBOX_NOT_RUNNING")
            if port not in box.ports:
                raise Conflict(f"port {port} is not exposed", code="PORT_NOT_EXPOSED")
            return "127.0.0.1", box.ports[port], box.id

        inflight = InFlight()
        proxy = SandboxProxy(resolve, lambda sid: activity.update([sid]), activity_interval=0.2, connect_timeout=2,
                             inflight=inflight)
        lt.run(proxy.start("127.0.0.1", 0))
        try:
            yield World(proxy, lt, alpha, beta, boxes, activity, resolves, inflight=inflight)
        finally:
            lt.run(proxy.stop())
            ws_server.close()
            http_server.shutdown()
            http_server.server_close()
            lt.close()


def who(r: httpx.Response) -> str:
    assert r.status_code == 200, r.text
    return r.text


# ------------------------------------------------------------------- routing
def test_routes_by_local_host_and_by_header(world: World) -> None:
    with world.client() as c:
        path = "/api/v1/files?path=/who"
        assert who(c.get(path, headers={"Host": "alpha.local"})) == "alpha"
        assert who(c.get(path, headers={"Host": "beta.local:9443"})) == "beta"
        assert who(c.get(path, headers={"Host": f"{ALPHA_ID}.local"})) == "alpha"
        assert who(c.get(path, headers={"X-Tensorlake-Sandbox-Id": BETA_ID})) == "beta"
        assert who(c.get(path, headers={"X-Tensorlake-Sandbox-Id": "alpha", "X-Tensorlake-Sandbox-Port": "9501"})) == "alpha"
        # every request was routed on its own over one client connection
        assert world.proxy.connections == 1


def test_two_sandboxes_over_one_pipelined_connection(world: World) -> None:
    conn = RawHTTP(world.proxy.port)
    try:
        order = ["alpha.local", "beta.local", "alpha.local", "beta.local", "alpha.local"]
        for host in order:  # all written before any answer is read
            conn.request("GET", "/api/v1/files?path=/who", f"Host: {host}", "Authorization: Bearer k")
        for host in order:
            status, _, body = conn.response()
            assert (status, body.decode()) == (200, host.split(".")[0])
        # and after an error the same connection still works
        conn.request("GET", "/api/v1/health", "Host: nosuch.local")
        assert conn.response()[0] == 404
        conn.request("GET", "/api/v1/files?path=/who", "Host: localhost:9443", f"X-Tensorlake-Sandbox-Id: {BETA_ID}")
        assert conn.response()[2] == b"beta"
    finally:
        conn.close()


def test_user_port_only_if_exposed(world: World) -> None:
    with world.client() as c:
        r = c.get("/hello?x=1", headers={"Host": f"{USER_PORT}-alpha.local", "X-Forwarded-For": "10.1.2.3"})
        assert r.status_code == 200
        seen = r.json()
        assert seen["path"] == "/hello?x=1"
        assert seen["headers"]["host"] == f"{USER_PORT}-alpha.local"
        assert seen["headers"]["x-forwarded-for"] == "10.1.2.3, 127.0.0.1"
        assert seen["headers"]["connection"] == "close"  # ours, not the client's keep-alive
        r = c.get("/", headers={"X-Tensorlake-Sandbox-Id": "alpha", "X-Tensorlake-Sandbox-Port": str(USER_PORT)})
        assert r.json()["path"] == "/"
        for hdrs in ({"Host": "8081-alpha.local"}, {"Host": f"{USER_PORT}-beta.local"}):
            r = c.get("/", headers=hdrs)
            assert (r.status_code, r.json()["code"]) == (403, "PORT_NOT_EXPOSED")


@pytest.mark.parametrize(
    ("hdrs", "status", "code"),
    [
        ({}, 400, "MISSING_SANDBOX_ID"),
        ({"X-Tensorlake-Sandbox-Id": "alpha", "X-Tensorlake-Sandbox-Port": "nope"}, 400, "INVALID_SANDBOX_PORT"),
        ({"Host": "nosuch.local"}, 404, "SANDBOX_NOT_FOUND"),
        ({"X-Tensorlake-Sandbox-Id": "nosuch"}, 404, "SANDBOX_NOT_FOUND"),
        ({"Host": "sleepy.local"}, 503, "SANDBOX_NOT_RUNNING"),
        ({"Host": "dead.local"}, 502, "SANDBOX_UNREACHABLE"),
        ({"Host": "buggy.local"}, 500, "INTERNAL"),
    ],
)
def test_error_answers(world: World, hdrs: dict[str, str], status: int, code: str) -> None:
    with world.client() as c:
        for method in ("GET", "PUT"):  # PUT: the unread body must not break keep-alive
            r = c.request(method, "/api/v1/files?path=/x", headers=hdrs, content=b"z" * 1000 if method == "PUT" else None)
            assert r.status_code == status
            body = r.json()
            assert body["code"] == code and body["error"]
        assert who(c.get("/api/v1/files?path=/who", headers={"Host": "beta.local"})) == "beta"


def test_upstream_failures(world: World) -> None:
    with world.client() as c:
        r = c.get("/hangup", headers={"Host": f"{USER_PORT}-alpha.local"})
        assert (r.status_code, r.json()["code"]) == (502, "BAD_GATEWAY")
        with pytest.raises(httpx.RemoteProtocolError):  # truncated body is cut, not passed off as complete
            c.get("/die", headers={"Host": f"{USER_PORT}-alpha.local"})


def test_resolver_may_take_its_time(world: World) -> None:
    with world.client() as c:
        t0 = time.monotonic()
        assert who(c.get("/api/v1/files?path=/who", headers={"Host": "slow.local"})) == "alpha"
        assert time.monotonic() - t0 >= 0.5


# ------------------------------------------------------------- bad input
def test_malformed_request_is_400_and_closed(world: World) -> None:
    conn = RawHTTP(world.proxy.port)
    try:
        conn.send(b"THIS IS NOT HTTP\r\n\r\n")
        data = conn.sock.recv(65536)
        assert data.startswith(b"HTTP/1.1 400 ")
        assert json.loads(data.split(b"\r\n\r\n", 1)[1])["code"] == "BAD_REQUEST"
        assert conn.closed()
    finally:
        conn.close()


def test_oversized_header_is_431(world: World) -> None:
    conn = RawHTTP(world.proxy.port)
    try:
        conn.send(b"GET / HTTP/1.1\r\nHost: alpha.local\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n")
        data = conn.sock.recv(65536)
        assert data.startswith(b"HTTP/1.1 431 ")
        assert b'"HEADER_TOO_LARGE"' in data
    finally:
        conn.close()


# ------------------------------------------------------------------ streaming
def test_run_sse_arrives_incrementally(world: World) -> None:
    before = world.activity[ALPHA_ID]
    with world.client() as c:
        t0 = time.monotonic()
        first_line_at = None
        events = []
        body = {"command": "sh", "args": ["-c", "echo a; sleep 2; echo b"]}
        with c.stream("POST", "/api/v1/processes/run", json=body, headers={"Host": "alpha.local"}) as r:
            assert r.headers["content-type"] == "text/event-stream"
            for line in r.iter_lines():
                if line.startswith("data:"):
                    event = json.loads(line[5:])
                    events.append(event)
                    if event.get("line") == "a":
                        first_line_at = time.monotonic() - t0
        total = time.monotonic() - t0
    assert [e["line"] for e in events if "line" in e] == ["a", "b"]
    assert events[-1] == {"exit_code": 0, "reason": "exited"}
    assert first_line_at is not None and first_line_at < 1.0, first_line_at
    assert total >= 2.0
    assert world.activity[ALPHA_ID] >= before + 2  # the request, then bytes 2 s later


def test_50mib_upload_and_download(world: World, tmp_path: Path) -> None:
    blob = os.urandom(50 << 20)
    digest = hashlib.sha256(blob).hexdigest()
    alpha_root = Path(world.alpha.root or "")

    def chunks() -> Iterator[bytes]:  # chunked upload, no Content-Length
        for i in range(0, len(blob), 1 << 20):
            yield blob[i : i + (1 << 20)]

    with world.client() as c:
        r = c.put("/api/v1/files?path=/big.bin", content=chunks(), headers={"Host": "alpha.local"})
        assert r.status_code == 204, r.text
        assert hashlib.sha256((alpha_root / "big.bin").read_bytes()).hexdigest() == digest
        r = c.put("/api/v1/files?path=/big2.bin", content=blob, headers={"X-Tensorlake-Sandbox-Id": "alpha"})
        assert r.status_code == 204, r.text
        sha, size = hashlib.sha256(), 0
        with c.stream("GET", "/api/v1/files?path=/big2.bin", headers={"Host": "alpha.local"}) as r:
            assert r.headers["content-length"] == str(len(blob))
            for chunk in r.iter_bytes():
                sha.update(chunk)
                size += len(chunk)
    assert (size, sha.hexdigest()) == (len(blob), digest)


def test_expect_100_continue_is_relayed(world: World) -> None:
    conn = RawHTTP(world.proxy.port)
    try:
        conn.send(b"PUT /api/v1/files?path=/cont.txt HTTP/1.1\r\nHost: alpha.local\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        assert conn.sock.recv(65536).startswith(b"HTTP/1.1 100 ")  # from the agent, before the body
        conn.methods.append("PUT")
        conn.send(b"hello")
        assert conn.response()[0] == 204
        assert Path(world.alpha.root or "", "cont.txt").read_bytes() == b"hello"
    finally:
        conn.close()


def test_agent_answer_before_body_is_read(world: World) -> None:
    Path(world.alpha.root or "", "adir").mkdir(exist_ok=True)
    with world.client() as c:  # a directory: the agent refuses without reading 8 MiB
        r = c.put("/api/v1/files?path=/adir", content=b"x" * (8 << 20), headers={"Host": "alpha.local"})
        assert r.status_code == 400 and r.json()["code"] == "IS_DIRECTORY"
        assert who(c.get("/api/v1/files?path=/who", headers={"Host": "alpha.local"})) == "alpha"


def test_client_abort_mid_upload_frees_upstream(world: World) -> None:
    wait_for(lambda: world.proxy.connections == 0)
    tasks, fds = world.tasks(), open_fds()
    conn = RawHTTP(world.proxy.port)
    conn.send(b"PUT /api/v1/files?path=/partial.bin HTTP/1.1\r\nHost: beta.local\r\nContent-Length: 10000000\r\n\r\n")
    conn.send(b"y" * 1_000_000)
    wait_for(lambda: tcp_states(world.beta.port).count("01") == 1)
    conn.close()
    wait_for(lambda: not {"01", "08"} & set(tcp_states(world.beta.port)))
    wait_for(lambda: world.proxy.connections == 0 and world.tasks() == tasks and open_fds() == fds)


def test_cancelled_follow_frees_upstream(world: World) -> None:
    with world.client() as c:
        script = "while true; do echo tick; sleep 0.05; done"
        r = c.post("/api/v1/processes", json={"command": "sh", "args": ["-c", script]}, headers={"Host": "alpha.local"})
        assert r.status_code == 201, r.text
        pid = r.json()["pid"]
    try:
        wait_for(lambda: world.proxy.connections == 0)
        tasks, fds = world.tasks(), open_fds()
        conn = RawHTTP(world.proxy.port)
        conn.send(f"GET /api/v1/processes/{pid}/output/follow HTTP/1.1\r\nHost: alpha.local\r\n\r\n".encode())
        got = b""
        while got.count(b"tick") < 3:
            got += conn.sock.recv(65536)
        assert tcp_states(world.alpha.port).count("01") == 1  # the proxy's one upstream connection
        conn.close()
        # the agent's side is closed too (not ESTABLISHED, not CLOSE_WAIT), nothing leaks here
        wait_for(lambda: not {"01", "08"} & set(tcp_states(world.alpha.port)))
        wait_for(lambda: world.proxy.connections == 0 and world.tasks() == tasks and open_fds() == fds)
    finally:
        with world.client() as c:
            c.delete(f"/api/v1/processes/{pid}", headers={"Host": "alpha.local"})


# ------------------------------------------------------------------ upgrades
def test_websocket_echo_through_upgrade(world: World) -> None:
    sock = socket.create_connection(("127.0.0.1", world.proxy.port), timeout=10)
    ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)

    def events() -> list[ws_events.Event]:
        while True:
            got = list(ws.events())
            if got:
                return got
            ws.receive_data(sock.recv(65536) or None)

    try:
        sock.sendall(ws.send(ws_events.Request(host=f"{WS_PORT}-alpha.local", target="/echo")))
        assert isinstance(events()[0], ws_events.AcceptConnection)
        before = world.activity[ALPHA_ID]
        for i in range(4):
            sock.sendall(ws.send(ws_events.TextMessage(data=f"hello {i}")))
            assert [e.data for e in events()] == [f"hello {i}"]
            time.sleep(0.25)  # > activity_interval: each message is new activity
        payload = os.urandom(300_000)
        sock.sendall(ws.send(ws_events.BytesMessage(data=payload)))
        received = b""
        while len(received) < len(payload):
            received += b"".join(bytes(e.data) for e in events())
        assert received == payload
        assert world.activity[ALPHA_ID] >= before + 3
        sock.sendall(ws.send(ws_events.CloseConnection(code=1000)))
        assert isinstance(events()[0], ws_events.CloseConnection)
        assert sock.recv(1) == b""  # the proxy closes after the upstream did
    finally:
        sock.close()


def test_refused_upgrade_is_relayed_and_connection_kept(world: World) -> None:
    conn = RawHTTP(world.proxy.port)
    try:
        conn.request(
            "GET",
            "/api/v1/pty/nosuch/ws",
            "Host: alpha.local",
            "Connection: Upgrade",
            "Upgrade: websocket",
            "Sec-WebSocket-Version: 13",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        )
        status, _, _ = conn.response()
        assert status in (400, 404)  # whatever the agent says, relayed
        conn.request("GET", "/api/v1/files?path=/who", "Host: beta.local")
        assert conn.response()[2] == b"beta"
    finally:
        conn.close()


# ------------------------------------------------------------- lifecycle, load
def test_activity_per_request(world: World) -> None:
    before = world.activity[BETA_ID]
    with world.client() as c:
        for _ in range(3):
            c.get("/api/v1/health", headers={"Host": "beta.local"})
    assert world.activity[BETA_ID] == before + 3


def test_requests_in_flight_are_counted_and_waited_for(world: World) -> None:
    """What a live migration's source does before freezing (proxy/inflight.py): a
    request already forwarded is waited for and arrives whole; a stream that outlasts
    the bound is reported still open; the count is back to 0 after each."""
    def run(script: str, out: dict[str, Any]) -> None:
        with world.client() as c:
            out["r"] = c.post("/api/v1/processes/run", json={"command": "sh", "args": ["-c", script]},
                              headers={"Host": "alpha.local"})

    got: dict[str, Any] = {}
    t = threading.Thread(target=run, args=("sleep 0.6; echo answered", got))
    t.start()
    wait_for(lambda: world.inflight.count(ALPHA_ID) == 1)
    assert world.inflight.count(BETA_ID) == 0
    t0 = time.monotonic()
    assert world.lt.run(world.inflight.idle(ALPHA_ID, 5.0)) == 0
    assert time.monotonic() - t0 < 3.0
    t.join(10)
    assert got["r"].status_code == 200 and "answered" in got["r"].text
    # The client can have the whole answer a moment before the proxy's exchange ends.
    wait_for(lambda: world.inflight.count(ALPHA_ID) == 0)

    long: dict[str, Any] = {}
    t = threading.Thread(target=run, args=("sleep 2; echo late", long))
    t.start()
    wait_for(lambda: world.inflight.count(ALPHA_ID) == 1)
    t0 = time.monotonic()
    assert world.lt.run(world.inflight.idle(ALPHA_ID, 0.3)) == 1  # the bound, not the stream, ends the wait
    assert 0.25 < time.monotonic() - t0 < 1.5
    t.join(10)
    wait_for(lambda: world.inflight.count(ALPHA_ID) == 0)


def test_stop_cuts_streams_in_flight(world: World) -> None:
    proxy = SandboxProxy(lambda ref, port: _resolve_alpha(world))
    world.lt.run(proxy.start("127.0.0.1", 0))
    port = proxy.port
    conn = RawHTTP(port)
    try:
        body = json.dumps({"command": "sleep", "args": ["30"]}).encode()
        conn.request("POST", "/api/v1/processes/run", "Host: x.local", "Content-Type: application/json", body=body)
        assert conn.sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        world.lt.run(proxy.stop(), timeout=5)
        assert conn.closed()
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    finally:
        conn.close()


async def _resolve_alpha(world: World) -> tuple[str, int, str]:
    return "127.0.0.1", world.alpha.port, ALPHA_ID


def test_upstream_connections_probe_a_silent_agent() -> None:
    """Keepalive on the proxy's side of every agent connection: a path that breaks while
    a response is awaited ends the request (502) instead of hanging it forever."""
    from cellbox.proxy.upstream import KEEPALIVE, Upstream

    async def scenario() -> tuple[int, int, int, int]:
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            up = await Upstream.connect("127.0.0.1", port, 5)
            sock = up.writer.get_extra_info("socket")
            opts = (sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                    sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
                    sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
                    sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT))
            up.writer.close()
            return opts
        finally:
            server.close()
            await server.wait_closed()

    enabled, idle, interval, count = asyncio.run(scenario())
    assert enabled and (idle, interval, count) == KEEPALIVE
