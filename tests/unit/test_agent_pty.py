"""In-sandbox agent: PTY sessions over the real agent and a real WebSocket client.

The agent runs as a subprocess on 127.0.0.1 (see ``harness.AgentProcess``);
``WSClient`` is a small synchronous WebSocket client built on wsproto (the
``websockets`` package is not a dependency).  ``test_agent_tunnels.py`` reuses it.
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)

try:
    from cellbox.agent.harness import AgentProcess
except ImportError:  # running without an installed package: use the src layout
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
    from cellbox.agent.harness import AgentProcess

pytestmark = pytest.mark.timeout(60)

OP_DATA, OP_RESIZE, OP_READY, OP_EXIT = 0, 1, 2, 3


# ------------------------------------------------------------ WebSocket client
class Rejected(Exception):
    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body!r}")
        self.status = status
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


class WSClient:
    """Blocking WebSocket client: whole messages in, pings answered, close seen."""

    def __init__(self, port: int, target: str, headers: list[tuple[str, str]] | None = None, timeout: float = 10) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.conn = WSConnection(ConnectionType.CLIENT)
        self.events: deque[Event] = deque()
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.frames_max = 0  # largest message payload received
        self._partial = bytearray()
        self.sock.sendall(self.conn.send(Request(host=f"127.0.0.1:{port}", target=target, extra_headers=headers or [])))
        status, body = 0, b""
        while True:
            event = self._next_event()
            if isinstance(event, AcceptConnection):
                return
            if isinstance(event, RejectConnection):
                status = event.status_code
                if not event.has_body:
                    break
            elif isinstance(event, RejectData):
                body += event.data
                if event.body_finished:
                    break
        self.sock.close()
        raise Rejected(status, body)

    def _next_event(self) -> Event:
        while not self.events:
            data = self.sock.recv(256 * 1024)
            self.conn.receive_data(data or None)
            self.events.extend(self.conn.events())
        return self.events.popleft()

    def recv(self) -> bytes | str | None:
        """Next complete message; None once the server closed (see close_code)."""
        while True:
            if self.close_code is not None:
                return None
            event = self._next_event()
            if isinstance(event, Ping):
                self.sock.sendall(self.conn.send(event.response()))
            elif isinstance(event, CloseConnection):
                self.close_code, self.close_reason = event.code, event.reason
                try:
                    self.sock.sendall(self.conn.send(event.response()))
                except Exception:
                    pass
                self.sock.close()
                return None
            elif isinstance(event, TextMessage):
                return event.data
            elif isinstance(event, BytesMessage):
                self._partial += event.data
                if event.frame_finished or event.message_finished:
                    self.frames_max = max(self.frames_max, len(self._partial))
                if event.message_finished:
                    data = bytes(self._partial)
                    self._partial.clear()
                    return data

    def send(self, data: bytes | str) -> None:
        message = TextMessage(data=data) if isinstance(data, str) else BytesMessage(data=data)
        self.sock.sendall(self.conn.send(message))

    def close(self, code: int = 1000) -> None:
        try:
            self.sock.sendall(self.conn.send(CloseConnection(code=code)))
            while self.recv() is not None:
                pass
        except OSError:
            pass
        self.sock.close()

    def __enter__(self) -> "WSClient":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.sock.fileno() >= 0:
            self.sock.close()


def ws_reject(port: int, target: str, headers: list[tuple[str, str]] | None = None) -> Rejected:
    with pytest.raises(Rejected) as info:
        WSClient(port, target, headers)
    return info.value


# ------------------------------------------------------------------ PTY helpers
class Term:
    """An attached PTY client: collects output, remembers the exit frame."""

    def __init__(self, agent: AgentProcess, session: dict[str, Any], ready: bool = True) -> None:
        self.ws = WSClient(agent.port, f"/api/v1/pty/{session['session_id']}/ws?token={session['token']}")
        self.output = bytearray()
        self.exit_code: int | None = None
        if ready:
            self.ws.send(bytes([OP_READY]))

    def pump(self) -> bool:
        """Handle one message; False once the connection is closed."""
        msg = self.ws.recv()
        if msg is None:
            return False
        assert isinstance(msg, bytes) and msg, msg
        if msg[0] == OP_DATA:
            self.output += msg[1:]
        elif msg[0] == OP_EXIT:
            assert self.exit_code is None
            self.exit_code = struct.unpack(">i", msg[1:5])[0]
        return True

    def expect(self, text: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        self.ws.sock.settimeout(timeout)
        while text.encode() not in self.output:
            assert time.monotonic() < deadline, f"{text!r} not in {bytes(self.output)!r}"
            assert self.pump(), f"closed before {text!r}: {bytes(self.output)!r}"
        return self.output.decode(errors="replace")

    def type(self, text: str) -> None:
        self.ws.send(bytes([OP_DATA]) + text.encode())

    def until_closed(self) -> None:
        while self.pump():
            pass


def create(client: httpx.Client, **body: Any) -> dict[str, Any]:
    r = client.post("/api/v1/pty", json=body)
    assert r.status_code == 201, r.text
    data = r.json()
    assert isinstance(data["session_id"], str) and isinstance(data["token"], str)
    return data


def session_info(client: httpx.Client, sid: str) -> dict[str, Any]:
    r = client.get(f"/api/v1/pty/{sid}")
    assert r.status_code == 200, r.text
    return r.json()


def wait_for(predicate: Any, timeout: float = 5.0, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


SH = {"command": "sh", "env": {"PS1": "$ "}}


# ---------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    with AgentProcess("--subreaper", root=str(tmp_path_factory.mktemp("root"))) as proc:
        yield proc


@pytest.fixture()
def client(agent: AgentProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=agent.url, timeout=20) as c:
        yield c


# ------------------------------------------------------------------------- tests
def test_echo_resize_and_exit_code(agent: AgentProcess, client: httpx.Client) -> None:
    session = create(client, **SH, rows=24, cols=80)
    info = session_info(client, session["session_id"])
    assert info["is_alive"] is True and info["rows"] == 24 and info["cols"] == 80 and info["command"] == "sh"
    assert "token" not in info
    term = Term(agent, session)
    term.type("echo hi-$((40+2))\n")
    term.expect("hi-42\r\n")
    term.type("stty size\n")
    term.expect("24 80\r\n")
    term.ws.send(struct.pack(">BHH", OP_RESIZE, 100, 30))  # cols, rows
    term.type("stty size\n")
    term.expect("30 100\r\n")
    r = client.post(f"/api/v1/pty/{session['session_id']}/resize", json={"rows": 40, "cols": 120})
    assert r.status_code == 204
    term.type("trap 'echo winched' WINCH; stty size\n")
    term.expect("40 120\r\n")
    client.post(f"/api/v1/pty/{session['session_id']}/resize", json={"rows": 41, "cols": 121})
    term.expect("winched")  # the shell got SIGWINCH
    term.type("exit 3\n")
    term.until_closed()
    assert term.exit_code == 3
    assert (term.ws.close_code, term.ws.close_reason) == (1000, "exit:3")
    info = session_info(client, session["session_id"])
    assert info["is_alive"] is False and info["exit_code"] == 3 and info["ended_at"] >= info["created_at"]
    assert (info["rows"], info["cols"]) == (41, 121)


def test_output_before_attach_is_replayed(agent: AgentProcess, client: httpx.Client) -> None:
    session = create(client, command="sh", args=["-c", "echo early-bird; read a; sleep 0.3; echo after-$a; read b; exit 5"])
    time.sleep(0.3)  # "early-bird" is printed while nobody is attached
    first = Term(agent, session)
    first.expect("early-bird")
    first.type("x\n")
    first.ws.close()  # detach before "after-x" is printed
    time.sleep(0.6)
    second = Term(agent, session)
    text = second.expect("after-x")
    assert "early-bird" not in text  # only what no client saw is replayed
    second.type("y\n")
    second.until_closed()
    assert second.exit_code == 5 and second.ws.close_reason == "exit:5"


def test_attach_after_exit_gets_output_and_exit(agent: AgentProcess, client: httpx.Client) -> None:
    session = create(client, command="sh", args=["-c", "echo bye; exit 7"])
    wait_for(lambda: not session_info(client, session["session_id"])["is_alive"])
    term = Term(agent, session)
    term.until_closed()
    assert b"bye" in term.output and term.exit_code == 7
    assert (term.ws.close_code, term.ws.close_reason) == (1000, "exit:7")


def test_output_waits_for_ready_and_backlog_is_bounded(agent: AgentProcess, client: httpx.Client) -> None:
    script = "head -c 3000000 /dev/zero | tr '\\0' a; echo; echo END"
    session = create(client, command="sh", args=["-c", script])
    wait_for(lambda: not session_info(client, session["session_id"])["is_alive"], timeout=15)
    term = Term(agent, session, ready=False)
    term.ws.sock.settimeout(0.3)
    with pytest.raises(socket.timeout):  # nothing is sent before READY
        term.pump()
    term.ws.sock.settimeout(10)
    term.ws.send(bytes([OP_READY]))
    term.until_closed()
    assert term.output.rstrip().endswith(b"END") and term.exit_code == 0
    assert 1_000_000 <= len(term.output) <= (1 << 20)  # the newest 1 MiB was kept
    assert term.ws.frames_max <= 64 * 1024


def test_live_output_is_split_into_64k_frames(agent: AgentProcess, client: httpx.Client) -> None:
    session = create(client, command="sh", args=["-c", "read x; head -c 500000 /dev/zero | tr '\\0' b; exit 0"])
    term = Term(agent, session)
    term.type("go\n")
    term.until_closed()
    assert term.output.count(b"b") == 500_000 and term.exit_code == 0
    assert term.ws.frames_max <= 64 * 1024


def test_token_and_unknown_session(agent: AgentProcess, client: httpx.Client) -> None:
    session = create(client, **SH)
    sid = session["session_id"]
    for target, headers in [
        (f"/api/v1/pty/{sid}/ws?token=wrong", []),
        (f"/api/v1/pty/{sid}/ws", []),
        (f"/api/v1/pty/{sid}/ws", [("X-PTY-Token", "wrong")]),
    ]:
        rejected = ws_reject(agent.port, target, headers)
        assert rejected.status == 403 and rejected.json()["code"] == "INVALID_TOKEN"
    rejected = ws_reject(agent.port, f"/api/v1/pty/nope/ws?token={session['token']}")
    assert rejected.status == 404 and rejected.json()["code"] == "SESSION_NOT_FOUND"
    for method, path in [("GET", "/api/v1/pty/nope"), ("DELETE", "/api/v1/pty/nope")]:
        r = client.request(method, path)
        assert r.status_code == 404 and r.json()["code"] == "SESSION_NOT_FOUND"
    r = client.post("/api/v1/pty/nope/resize", json={"rows": 1, "cols": 1})
    assert r.status_code == 404
    # the token in the X-PTY-Token header alone is enough (the SDK sends both)
    term_ws = WSClient(agent.port, f"/api/v1/pty/{sid}/ws", [("X-PTY-Token", session["token"])])
    term_ws.close()
    # a plain GET on the WebSocket route is not an upgrade
    r = client.get(f"/api/v1/pty/{sid}/ws", params={"token": session["token"]})
    assert r.status_code == 426 and r.json()["code"] == "UPGRADE_REQUIRED"
    assert client.delete(f"/api/v1/pty/{sid}").status_code == 204


def test_list_and_delete_terminates_clients(agent: AgentProcess, client: httpx.Client) -> None:
    session = create(client, command="sleep", args=["60"])
    sid = session["session_id"]
    listed = {s["session_id"]: s for s in client.get("/api/v1/pty").json()["sessions"]}
    entry = listed[sid]
    assert set(entry) >= {"session_id", "pid", "command", "args", "rows", "cols", "created_at", "is_alive"}
    assert entry["args"] == ["60"] and entry["is_alive"] is True and pid_alive(entry["pid"])
    term = Term(agent, session)
    assert client.delete(f"/api/v1/pty/{sid}").status_code == 204
    term.until_closed()
    assert (term.ws.close_code, term.ws.close_reason) == (1001, "session terminated")
    assert term.exit_code is None
    assert client.get(f"/api/v1/pty/{sid}").status_code == 404
    assert sid not in [s["session_id"] for s in client.get("/api/v1/pty").json()["sessions"]]
    wait_for(lambda: not pid_alive(entry["pid"]))


def test_delete_kills_a_hangup_ignoring_program(agent: AgentProcess, client: httpx.Client) -> None:
    session = create(client, command="sh", args=["-c", "trap '' HUP; echo armed; while :; do sleep 0.1; done"])
    term = Term(agent, session)
    term.expect("armed")
    pid = session_info(client, session["session_id"])["pid"]
    assert client.delete(f"/api/v1/pty/{session['session_id']}").status_code == 204
    wait_for(lambda: not pid_alive(pid), timeout=8)  # SIGKILL after the grace period


def test_text_frames_are_rejected(agent: AgentProcess, client: httpx.Client) -> None:
    session = create(client, **SH)
    term = Term(agent, session)
    term.ws.send("echo hi\n")
    term.until_closed()
    assert term.ws.close_code == 1003
    client.delete(f"/api/v1/pty/{session['session_id']}")


def test_env_working_dir_and_terminal(agent: AgentProcess, client: httpx.Client, tmp_path: Path) -> None:
    session = create(
        client,
        command="sh",
        args=["-c", 'echo "$FOO|$(pwd)|$TERM"; test -t 0 && echo tty-yes; ps -o tty= -p $$ >/dev/null && echo ctty'],
        env={"FOO": "bar"},
        working_dir=str(tmp_path),
    )
    term = Term(agent, session)
    term.until_closed()
    text = term.output.decode()
    assert f"bar|{tmp_path}|xterm-256color" in text and "tty-yes" in text
    assert term.exit_code == 0


def test_create_validation_and_exec_errors(client: httpx.Client) -> None:
    for body in [{}, {"command": 5}, {"command": "sh", "rows": 0}, {"command": "sh", "cols": "80"},
                 {"command": "sh", "working_dir": "rel"}, {"command": "sh", "args": "x"}]:
        r = client.post("/api/v1/pty", json=body)
        assert r.status_code == 400 and r.json()["code"] == "INVALID_REQUEST", (body, r.text)
    r = client.post("/api/v1/pty", json={"command": "/no/such/binary"})
    assert r.status_code == 400 and r.json()["code"] == "COMMAND_NOT_FOUND"
    r = client.post("/api/v1/pty", json={"command": "sh", "working_dir": "/no/such/dir"})
    assert r.status_code == 400 and r.json()["code"] == "INVALID_WORKING_DIR"
    session = create(client, command="sleep", args=["30"])
    for body in [{"rows": 0, "cols": 5}, {"rows": 5}, {"rows": 5, "cols": 70000}]:
        r = client.post(f"/api/v1/pty/{session['session_id']}/resize", json=body)
        assert r.status_code == 400 and r.json()["code"] == "INVALID_REQUEST", body
    client.delete(f"/api/v1/pty/{session['session_id']}")


def test_too_many_sessions(tmp_path: Path) -> None:
    with AgentProcess(root=str(tmp_path)) as agent, httpx.Client(base_url=agent.url, timeout=20) as client:
        sids = [create(client, command="sleep", args=["60"])["session_id"] for _ in range(64)]
        r = client.post("/api/v1/pty", json={"command": "sleep", "args": ["60"]})
        assert r.status_code == 429 and r.json()["code"] == "TOO_MANY_SESSIONS"
        assert client.delete(f"/api/v1/pty/{sids[0]}").status_code == 204
        create(client, command="true")  # room again


def test_start_up_path_does_not_import_pty_websocket_or_supervisor_modules() -> None:
    """PTY/WebSocket/tunnel/supervisor modules are imported on first use only."""
    import subprocess

    src = str(Path(__file__).resolve().parents[2] / "src")
    code = (
        "import sys; sys.path.insert(0, %r)\n"
        "from cellbox.agent import main, app\n"
        "print(' '.join(sorted(sys.modules)))" % src
    )
    modules = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                 check=True).stdout.split())
    assert "cellbox.agent.proc_api" in modules
    lazy = {"wsproto", "termios", "hmac", "cellbox.agent.ws", "cellbox.agent.ptys",
            "cellbox.agent.pty_api", "cellbox.agent.tunnels", "cellbox.agent.managed", "cellbox.agent.health"}
    assert not modules & lazy, modules & lazy


def test_agent_shutdown_ends_pty_sessions(tmp_path: Path) -> None:
    agent = AgentProcess(root=str(tmp_path)).start()
    try:
        with httpx.Client(base_url=agent.url, timeout=20) as client:
            session = create(client, command="sleep", args=["60"])
            term = Term(agent, session)
            pid = session_info(client, session["session_id"])["pid"]
            t0 = time.monotonic()
            assert agent.stop() == 0 and time.monotonic() - t0 < 5
            term.until_closed()
            assert term.ws.close_code in (1001, 1006)
            assert not pid_alive(pid)
            assert "Traceback" not in agent.log_text()
    finally:
        agent.cleanup()


def test_websocket_pings_and_drops_a_dead_peer() -> None:
    """ws.WebSocket in-process: it pings, and aborts a peer that never answers."""
    import asyncio

    from wsproto.connection import Connection

    from cellbox.agent.ws import WebSocket

    async def main() -> None:
        result: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            ws = WebSocket(reader, writer, ping_interval=0.05, dead_after=0.3)
            result.set_result((await ws.receive(), ws.close_code))

        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        t0 = time.monotonic()
        conn = Connection(ConnectionType.CLIENT)
        conn.receive_data(await asyncio.wait_for(reader.read(1024), 2))
        assert any(isinstance(e, Ping) for e in conn.events())  # pinged, and we never answer
        assert await asyncio.wait_for(result, 3) == (None, 1006)
        assert time.monotonic() - t0 >= 0.25
        while await asyncio.wait_for(reader.read(65536), 2):  # the server dropped the connection
            pass
        writer.close()
        server.close()

    asyncio.run(main())
