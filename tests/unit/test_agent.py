"""In-sandbox agent: process API, SSE and HTTP behaviour, against the real agent.

The agent is started as a subprocess on 127.0.0.1 (random port, temp --root)
and driven with httpx, exactly as the proxy/SDK will drive it.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

try:
    from cellbox.agent.harness import AgentProcess
except ImportError:  # running without an installed package: use the src layout
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
    from cellbox.agent.harness import AgentProcess

pytestmark = pytest.mark.timeout(60)


# --------------------------------------------------------------------- helpers
def sse_events(response: httpx.Response) -> list[tuple[str | None, Any]]:
    """Parse an SSE response into (event name, decoded JSON data) pairs."""
    events: list[tuple[str | None, Any]] = []
    name: str | None = None
    for line in response.iter_lines():
        if line.startswith(":"):
            continue
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            events.append((name, json.loads(line[5:].strip())))
        elif line == "":
            name = None
    return events


def run(client: httpx.Client, **body: Any) -> list[dict[str, Any]]:
    with client.stream("POST", "/api/v1/processes/run", json=body) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"] == "text/event-stream"
        assert r.headers["cache-control"] == "no-cache"
        return [data for _, data in sse_events(r)]


def lines_of(events: list[dict[str, Any]], stream: str) -> list[str]:
    return [e["line"] for e in events if e.get("stream") == stream]


def wait_for(predicate: Any, timeout: float = 5.0, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")


def pid_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def start(client: httpx.Client, **body: Any) -> dict[str, Any]:
    r = client.post("/api/v1/processes", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def wait_exit(client: httpx.Client, pid: int, timeout: float = 5.0) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        info = client.get(f"/api/v1/processes/{pid}").json()
        return info if info["status"] != "running" else None

    return wait_for(done, timeout)


# -------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    root = tmp_path_factory.mktemp("root")
    with AgentProcess("--subreaper", root=str(root)) as proc:
        yield proc


@pytest.fixture()
def client(agent: AgentProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=agent.url, timeout=20) as c:
        yield c


# ---------------------------------------------------------------- health/info
def test_health_and_info(client: httpx.Client) -> None:
    assert client.get("/api/v1/health").json() == {"healthy": True}
    info = client.get("/api/v1/info").json()
    assert set(info) == {"version", "uptime_secs", "running_processes", "total_processes"}
    assert isinstance(info["uptime_secs"], int) and isinstance(info["total_processes"], int)


# ------------------------------------------------------------------------ /run
def test_run_args_env_working_dir(client: httpx.Client, tmp_path: Path) -> None:
    events = run(
        client,
        command="sh",
        args=["-c", 'echo "$1 $FOO"; pwd; echo "$LANG $TERM $HOME"; echo "$PATH"', "sh", "hello"],
        env={"FOO": "bar"},
        working_dir=str(tmp_path),
        timeout=10,
    )
    started = events[0]
    assert set(started) == {"handle", "pid", "started_at"}
    assert isinstance(started["started_at"], int) and started["started_at"] > 1e12
    out = lines_of(events, "stdout")
    assert out[0] == "hello bar"
    assert out[1] == str(tmp_path)
    assert out[2].startswith("C.UTF-8 xterm /")
    assert "/usr/bin" in out[3]
    assert events[-1] == {"exit_code": 0, "reason": "exited"}
    assert all(isinstance(e["timestamp"], int) for e in events[1:-1])


def test_run_stdout_stderr_and_nonzero_exit(client: httpx.Client) -> None:
    events = run(client, command="sh", args=["-c", "echo out1; echo err1 >&2; echo out2; printf tail; exit 3"])
    assert lines_of(events, "stdout") == ["out1", "out2", "tail"]  # partial last line kept
    assert lines_of(events, "stderr") == ["err1"]
    assert events[-1] == {"exit_code": 3, "reason": "exited"}


def test_env_inheritance(tmp_path: Path) -> None:
    env = dict(os.environ, IMAGE_VAR="from-image", CELLBOX_PRIVATE="secret", PATH="/opt/x/bin:/usr/bin:/bin")
    script = 'echo "${IMAGE_VAR:-unset} ${CELLBOX_PRIVATE:-unset} $PATH"'
    with AgentProcess(root=str(tmp_path), env=env) as agent, httpx.Client(base_url=agent.url, timeout=10) as c:
        events = run(c, command="sh", args=["-c", script])
        assert lines_of(events, "stdout") == ["from-image unset /opt/x/bin:/usr/bin:/bin"]
        events = run(c, command="sh", args=["-c", script], env={"IMAGE_VAR": "override"})
        assert lines_of(events, "stdout")[0].startswith("override ")
    with (
        AgentProcess("--no-inherit-env", root=str(tmp_path), env=env) as agent,
        httpx.Client(base_url=agent.url, timeout=10) as c,
    ):
        events = run(c, command="/usr/bin/env")
        assert sorted(line.split("=")[0] for line in lines_of(events, "stdout")) == [
            "HOME",
            "LANG",
            "LOGNAME",
            "PATH",
            "TERM",
            "USER",
        ]
        assert "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" in lines_of(events, "stdout")


def test_run_default_working_dir_is_root(client: httpx.Client) -> None:
    events = run(client, command="pwd")
    assert lines_of(events, "stdout") == ["/"]


def test_run_timeout_reports_timed_out(client: httpx.Client) -> None:
    t0 = time.monotonic()
    events = run(client, command="sh", args=["-c", "echo start; sleep 30"], timeout=0.5)
    assert time.monotonic() - t0 < 5
    assert lines_of(events, "stdout") == ["start"]
    assert events[-1] == {"exit_code": -9, "signal": 9, "reason": "timed_out"}
    info = client.get(f"/api/v1/processes/{events[0]['pid']}").json()
    assert info["status"] == "signaled" and info["signal"] == 9 and info["oom_killed"] is False


def test_run_timeout_kills_whole_group(client: httpx.Client) -> None:
    events = run(client, command="sh", args=["-c", "sleep 30 & echo $!; wait"], timeout=0.5)
    child = int(lines_of(events, "stdout")[0])
    assert events[-1]["reason"] == "timed_out"
    wait_for(lambda: not pid_alive(child))


def test_run_signaled(client: httpx.Client) -> None:
    events = run(client, command="sh", args=["-c", "kill -TERM $$"])
    assert events[-1] == {"signal": 15, "reason": "signaled"}


def test_run_exec_failures_are_4xx(client: httpx.Client, tmp_path: Path) -> None:
    r = client.post("/api/v1/processes/run", json={"command": "definitely-not-a-command-xyz"})
    assert r.status_code == 400 and r.json()["code"] == "COMMAND_NOT_FOUND"
    assert "definitely-not-a-command-xyz" in r.json()["error"]
    r = client.post("/api/v1/processes", json={"command": "definitely-not-a-command-xyz"})
    assert r.status_code == 400 and r.json()["code"] == "COMMAND_NOT_FOUND"
    r = client.post("/api/v1/processes/run", json={"command": "true", "working_dir": str(tmp_path / "nope")})
    assert r.status_code == 400 and r.json()["code"] == "INVALID_WORKING_DIR"
    script = tmp_path / "noexec.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    r = client.post("/api/v1/processes", json={"command": str(script)})
    assert r.status_code == 400 and r.json()["code"] == "PERMISSION_DENIED"
    r = client.post("/api/v1/processes/run", json={"command": "true", "user": "no-such-user-xyz"})
    assert r.status_code == 400 and r.json()["code"] == "INVALID_USER"


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_run_as_other_users(client: httpx.Client) -> None:
    def ids(user: Any) -> list[str]:
        events = run(client, command="sh", args=["-c", 'echo "$(id -u) $(id -g) $HOME"'], user=user)
        assert events[-1]["exit_code"] == 0, events
        return lines_of(events, "stdout")

    assert ids("root") == ["0 0 /root"]
    assert ids("1000")[0].startswith("1000 ")
    assert ids("1000:1001")[0].startswith("1000 1001 ")
    assert ids({"uid": 1234, "gid": 4321})[0].startswith("1234 4321 ")
    nobody = ids("nobody")[0].split()
    assert nobody[0] == "65534"
    assert ids({"name": "nobody"})[0].split()[0] == "65534"


# -------------------------------------------------------------- process API
def test_start_list_get_delete(client: httpx.Client) -> None:
    info = start(client, command="sleep", args=["30"])  # named = managed: test_agent_managed.py
    pid = info["pid"]
    for key in (
        "pid",
        "status",
        "command",
        "args",
        "started_at",
        "ended_at",
        "exit_code",
        "signal",
        "oom_killed",
        "stdin_writable",
    ):
        assert key in info
    assert info["status"] == "running" and info["args"] == ["30"] and info["stdin_writable"] is False
    assert pid in [p["pid"] for p in client.get("/api/v1/processes").json()["processes"]]
    assert client.get(f"/api/v1/processes/{pid}").json()["pid"] == pid
    assert "managed" not in info
    assert client.get("/api/v1/info").json()["running_processes"] >= 1
    r = client.delete(f"/api/v1/processes/{pid}")
    assert r.status_code == 204
    info = wait_exit(client, pid)
    assert info["status"] == "signaled" and info["signal"] == 9 and info["oom_killed"] is False
    assert isinstance(info["ended_at"], int) and info["ended_at"] >= info["started_at"]


def test_unknown_process_is_404(client: httpx.Client) -> None:
    for method, path in [
        ("GET", "/api/v1/processes/999999"),
        ("GET", "/api/v1/processes/no-such-name"),
        ("DELETE", "/api/v1/processes/999999"),
        ("GET", "/api/v1/processes/999999/stdout"),
        ("GET", "/api/v1/processes/999999/output/follow"),
        ("POST", "/api/v1/processes/999999/stdin/close"),
    ]:
        r = client.request(method, path)
        assert r.status_code == 404, (method, path)
        assert r.json()["code"] == "PROCESS_NOT_FOUND"
    r = client.post("/api/v1/processes/999999/signal", json={"signal": 15})
    assert r.status_code == 404


def test_signal_reaches_whole_group(client: httpx.Client) -> None:
    info = start(client, command="sh", args=["-c", "sleep 30 & echo $!; wait"])
    pid = info["pid"]
    out = wait_for(lambda: client.get(f"/api/v1/processes/{pid}/stdout").json()["lines"])
    child = int(out[0])
    assert pid_alive(child)
    r = client.post(f"/api/v1/processes/{pid}/signal", json={"signal": 15})
    assert r.status_code == 200 and r.json() == {"success": True}
    info = wait_exit(client, pid)
    assert info["status"] == "signaled" and info["signal"] == 15
    wait_for(lambda: not pid_alive(child))


def test_delete_kills_whole_group(client: httpx.Client) -> None:
    info = start(client, command="sh", args=["-c", "trap '' TERM; sleep 30 & echo $!; wait"])
    pid = info["pid"]
    child = int(wait_for(lambda: client.get(f"/api/v1/processes/{pid}/stdout").json()["lines"])[0])
    assert client.delete(f"/api/v1/processes/{pid}").status_code == 204
    assert wait_exit(client, pid)["signal"] == 9
    wait_for(lambda: not pid_alive(child))


def test_signal_validation(client: httpx.Client) -> None:
    pid = start(client, command="sleep", args=["30"])["pid"]
    try:
        for body in ({}, {"signal": "TERM"}, {"signal": 0}, {"signal": 99}, {"signal": True}):
            r = client.post(f"/api/v1/processes/{pid}/signal", json=body)
            assert r.status_code == 400, body
            assert r.json()["code"] == "INVALID_REQUEST"
    finally:
        client.delete(f"/api/v1/processes/{pid}")


def test_stdin_pipe_write_and_close(client: httpx.Client) -> None:
    info = start(client, command="cat", stdin_mode="pipe")
    pid = info["pid"]
    assert info["stdin_writable"] is True
    assert client.post(f"/api/v1/processes/{pid}/stdin", content=b"hello\nwor").status_code == 204
    assert client.post(f"/api/v1/processes/{pid}/stdin", content=b"ld\n").status_code == 204
    wait_for(lambda: client.get(f"/api/v1/processes/{pid}/stdout").json()["lines"] == ["hello", "world"])
    assert client.post(f"/api/v1/processes/{pid}/stdin/close").status_code == 204
    info = wait_exit(client, pid)
    assert info["status"] == "exited" and info["exit_code"] == 0 and info["stdin_writable"] is False
    r = client.post(f"/api/v1/processes/{pid}/stdin", content=b"late")
    assert r.status_code == 400 and r.json()["code"] == "STDIN_NOT_WRITABLE"


def test_stdin_large_write_with_backpressure(client: httpx.Client) -> None:
    pid = start(client, command="wc", args=["-c"], stdin_mode="pipe")["pid"]
    payload = b"x" * (3 * 1024 * 1024)  # far more than a pipe buffer
    assert client.post(f"/api/v1/processes/{pid}/stdin", content=payload).status_code == 204
    assert client.post(f"/api/v1/processes/{pid}/stdin/close").status_code == 204
    wait_exit(client, pid)
    assert client.get(f"/api/v1/processes/{pid}/stdout").json()["lines"] == [str(len(payload))]


def test_stdin_closed_by_default(client: httpx.Client) -> None:
    events = run(client, command="cat")
    assert events[-1] == {"exit_code": 0, "reason": "exited"}
    pid = start(client, command="sleep", args=["30"])["pid"]
    try:
        r = client.post(f"/api/v1/processes/{pid}/stdin", content=b"x")
        assert r.status_code == 400 and r.json()["code"] == "STDIN_NOT_WRITABLE"
    finally:
        client.delete(f"/api/v1/processes/{pid}")


def test_output_snapshots(client: httpx.Client) -> None:
    pid = start(client, command="sh", args=["-c", "echo a; echo b >&2; echo c"])["pid"]
    wait_exit(client, pid)
    wait_for(lambda: client.get(f"/api/v1/processes/{pid}/output").json()["line_count"] == 3)
    assert client.get(f"/api/v1/processes/{pid}/stdout").json() == {"pid": pid, "lines": ["a", "c"], "line_count": 2}
    assert client.get(f"/api/v1/processes/{pid}/stderr").json() == {"pid": pid, "lines": ["b"], "line_count": 1}
    assert sorted(client.get(f"/api/v1/processes/{pid}/output").json()["lines"]) == ["a", "b", "c"]


def test_output_discard_mode(client: httpx.Client) -> None:
    pid = start(client, command="sh", args=["-c", "echo a; echo b >&2"], stdout_mode="discard")["pid"]
    wait_exit(client, pid)
    time.sleep(0.1)
    assert client.get(f"/api/v1/processes/{pid}/stdout").json()["lines"] == []
    assert client.get(f"/api/v1/processes/{pid}/stderr").json()["lines"] == ["b"]


def test_invalid_utf8_output_is_replaced(client: httpx.Client) -> None:
    events = run(client, command="printf", args=["ok\\377\\n"])
    assert lines_of(events, "stdout") == ["ok\ufffd"]


# ------------------------------------------------------------------- follow
def test_follow_replays_then_streams_then_eof(client: httpx.Client) -> None:
    script = "echo first; echo err >&2; sleep 0.6; echo second; sleep 0.3; echo third"
    pid = start(client, command="sh", args=["-c", script])["pid"]
    wait_for(lambda: client.get(f"/api/v1/processes/{pid}/stdout").json()["lines"] == ["first"])
    t0 = time.monotonic()
    with client.stream("GET", f"/api/v1/processes/{pid}/output/follow") as r:
        assert r.headers["content-type"] == "text/event-stream"
        events = sse_events(r)  # returns only once the server closes the response
    assert time.monotonic() - t0 >= 0.5  # it really waited for live lines
    assert events[-1] == ("eof", {})
    outputs = [data for name, data in events if name == "output"]
    assert [(o["line"], o["stream"]) for o in outputs if o["stream"] == "stdout"] == [
        ("first", "stdout"),
        ("second", "stdout"),
        ("third", "stdout"),
    ]
    assert [o["line"] for o in outputs if o["stream"] == "stderr"] == ["err"]
    # stdout/follow after exit: pure replay, no "stream" key, then eof and close
    with client.stream("GET", f"/api/v1/processes/{pid}/stdout/follow") as r:
        events = sse_events(r)
    assert events == [
        ("output", {"line": "first", "timestamp": events[0][1]["timestamp"]}),
        ("output", {"line": "second", "timestamp": events[1][1]["timestamp"]}),
        ("output", {"line": "third", "timestamp": events[2][1]["timestamp"]}),
        ("eof", {}),
    ]
    with client.stream("GET", f"/api/v1/processes/{pid}/stderr/follow") as r:
        assert [d.get("line") for _, d in sse_events(r)] == ["err", None]


def test_follow_ends_even_if_grandchild_keeps_pipe_open(client: httpx.Client) -> None:
    t0 = time.monotonic()
    events = run(client, command="sh", args=["-c", "echo parent; sleep 3 & echo $!"])
    assert time.monotonic() - t0 < 2.5
    assert events[-1] == {"exit_code": 0, "reason": "exited"}
    out = lines_of(events, "stdout")
    assert out[0] == "parent"
    os.kill(int(out[1]), 9)


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_client_disconnect_mid_follow(agent: AgentProcess, client: httpx.Client) -> None:
    pid = start(client, command="sh", args=["-c", "while true; do echo tick; sleep 0.05; done"])["pid"]
    baseline = fd_count(agent.agent_pid)
    try:
        for _ in range(5):
            sock = socket.create_connection(("127.0.0.1", agent.port))
            sock.sendall(f"GET /api/v1/processes/{pid}/output/follow HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            assert b"text/event-stream" in sock.recv(65536)
            sock.close()
            with httpx.Client(base_url=agent.url, timeout=5) as c2:  # still fully working
                assert c2.get("/api/v1/health").json() == {"healthy": True}
        with client.stream("GET", f"/api/v1/processes/{pid}/stdout/follow") as r:
            for line in r.iter_lines():
                if "tick" in line:
                    break  # leave mid-stream
        assert client.get("/api/v1/health").status_code == 200
        # the abandoned streams' sockets are closed promptly (no fd leak), not at the next ping
        wait_for(lambda: fd_count(agent.agent_pid) <= baseline + 1)
    finally:
        client.delete(f"/api/v1/processes/{pid}")
    wait_exit(client, pid)


def test_sse_keepalive_pings(tmp_path: Path) -> None:
    with (
        AgentProcess("--keepalive", "0.2", root=str(tmp_path)) as agent,
        httpx.Client(base_url=agent.url, timeout=10) as client,
    ):
        with client.stream(
            "POST", "/api/v1/processes/run", json={"command": "sh", "args": ["-c", "sleep 0.9; echo done"]}
        ) as r:
            raw = list(r.iter_lines())
        assert raw.count(": ping") >= 2
        events = [json.loads(line[5:]) for line in raw if line.startswith("data:")]
        assert events[1:] == [
            {"line": "done", "timestamp": events[1]["timestamp"], "stream": "stdout"},
            {"exit_code": 0, "reason": "exited"},
        ]
        pid = start(client, command="sleep", args=["0.7"])["pid"]
        with client.stream("GET", f"/api/v1/processes/{pid}/output/follow") as r:
            raw = list(r.iter_lines())
        assert ": ping" in raw and raw[-2:] == ["data: {}", ""] and "event: eof" in raw


def test_run_client_disconnect_kills_process(agent: AgentProcess, client: httpx.Client) -> None:
    sock = socket.create_connection(("127.0.0.1", agent.port))
    body = json.dumps({"command": "sh", "args": ["-c", "echo go; sleep 30"]}).encode()
    sock.sendall(
        b"POST /api/v1/processes/run HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    data = b""
    while b'"go"' not in data:
        data += sock.recv(65536)
    started = json.loads(data.split(b"data: ", 1)[1].split(b"\n", 1)[0])
    sock.close()
    info = wait_exit(client, started["pid"])
    assert info["signal"] == 9


# --------------------------------------------------------------- HTTP layer
def test_malformed_and_invalid_requests(client: httpx.Client) -> None:
    bad = [
        b"{not json",
        b"",
        b"[1,2]",
        json.dumps({"args": ["x"]}).encode(),
        json.dumps({"command": 5}).encode(),
        json.dumps({"command": "true", "args": "x"}).encode(),
        json.dumps({"command": "true", "args": [1]}).encode(),
        json.dumps({"command": "true", "env": {"A": 1}}).encode(),
        json.dumps({"command": "true", "working_dir": "relative"}).encode(),
        json.dumps({"command": "true", "timeout": "soon"}).encode(),
        json.dumps({"command": "true", "stdin_mode": "maybe"}).encode(),
        json.dumps({"command": "true", "name": "123"}).encode(),
    ]
    for path in ("/api/v1/processes", "/api/v1/processes/run"):
        for body in bad:
            if path.endswith("run") and b"stdin_mode" in body or path.endswith("run") and b"name" in body:
                continue
            r = client.post(path, content=body, headers={"Content-Type": "application/json"})
            assert r.status_code == 400, (path, body, r.text)
            assert r.json()["code"] == "INVALID_REQUEST" and r.json()["error"]


def test_oversized_json_is_413(client: httpx.Client) -> None:
    body = json.dumps({"command": "true", "args": ["x" * (2 << 20)]}).encode()
    r = client.post("/api/v1/processes", content=body)
    assert r.status_code == 413 and r.json()["code"] == "PAYLOAD_TOO_LARGE"
    assert client.get("/api/v1/health").status_code == 200


def test_unknown_route_and_method(client: httpx.Client) -> None:
    r = client.get("/api/v1/nope")
    assert r.status_code == 404 and r.json()["code"] == "NOT_FOUND"
    r = client.put("/api/v1/health")
    assert r.status_code == 405 and r.json()["code"] == "METHOD_NOT_ALLOWED"
    assert "GET" in r.headers["allow"]


def test_chunked_request_body(client: httpx.Client) -> None:
    def gen() -> Iterator[bytes]:
        yield b'{"command": "echo", '
        yield b'"args": ["chunked"]}'

    r = client.post("/api/v1/processes", content=gen())
    assert r.status_code == 201, r.text
    pid = r.json()["pid"]
    wait_exit(client, pid)
    wait_for(lambda: client.get(f"/api/v1/processes/{pid}/stdout").json()["lines"] == ["chunked"])


def _read_responses(sock: socket.socket, count: int) -> list[bytes]:
    """Read ``count`` Content-Length framed responses from a raw socket."""
    buf = b""
    out = []
    while len(out) < count:
        while b"\r\n\r\n" not in buf:
            buf += sock.recv(65536)
        head, rest = buf.split(b"\r\n\r\n", 1)
        length = int([h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")][0].split(b":")[1])
        while len(rest) < length:
            rest += sock.recv(65536)
        out.append(head + b"\r\n\r\n" + rest[:length])
        buf = rest[length:]
    return out


def test_keepalive_and_pipelining(agent: AgentProcess) -> None:
    with socket.create_connection(("127.0.0.1", agent.port)) as sock:
        sock.settimeout(10)
        body = b'{"command":"true"}'
        sock.sendall(
            b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /api/v1/processes HTTP/1.1\r\nHost: x\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
            + b"GET /api/v1/nope HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /api/v1/info HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        responses = _read_responses(sock, 4)
        assert responses[0].startswith(b"HTTP/1.1 200") and b'"healthy":true' in responses[0]
        assert responses[1].startswith(b"HTTP/1.1 201")
        assert responses[2].startswith(b"HTTP/1.1 404")
        assert responses[3].startswith(b"HTTP/1.1 200") and b"uptime_secs" in responses[3]
        sock.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n")  # still alive afterwards
        assert _read_responses(sock, 1)[0].startswith(b"HTTP/1.1 200")


def test_expect_100_continue_and_http10(agent: AgentProcess) -> None:
    body = b'{"command": "true"}'
    with socket.create_connection(("127.0.0.1", agent.port)) as sock:
        sock.settimeout(10)
        sock.sendall(
            b"POST /api/v1/processes HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
        )
        assert sock.recv(65536).startswith(b"HTTP/1.1 100")
        sock.sendall(body)
        assert _read_responses(sock, 1)[0].startswith(b"HTTP/1.1 201")
    with socket.create_connection(("127.0.0.1", agent.port)) as sock:
        sock.settimeout(10)
        sock.sendall(b"GET /api/v1/health HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):  # HTTP/1.0: server closes after the response
            data += chunk
        assert data.startswith(b"HTTP/1.1 200") and data.endswith(b'{"healthy":true}')


def test_garbage_request_gets_400(agent: AgentProcess) -> None:
    with socket.create_connection(("127.0.0.1", agent.port)) as sock:
        sock.settimeout(10)
        sock.sendall(b"THIS IS NOT HTTP\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 400")


def test_many_processes_in_parallel(client: httpx.Client) -> None:
    pids = [start(client, command="sh", args=["-c", f"echo {i}"])["pid"] for i in range(30)]
    for i, pid in enumerate(pids):
        assert wait_exit(client, pid)["exit_code"] == 0
        wait_for(lambda pid=pid, i=i: client.get(f"/api/v1/processes/{pid}/stdout").json()["lines"] == [str(i)])


# ---------------------------------------------------------- bounded output
def test_output_buffer_is_bounded(tmp_path: Path) -> None:
    with (
        AgentProcess("--max-output-lines", "100", root=str(tmp_path)) as agent,
        httpx.Client(base_url=agent.url, timeout=20) as client,
    ):
        events = run(client, command="seq", args=["1", "5000"])
        assert len(lines_of(events, "stdout")) >= 100  # a live follower may see more than is retained
        pid = events[0]["pid"]
        snap = client.get(f"/api/v1/processes/{pid}/stdout").json()
        assert snap["line_count"] == 100 and snap["lines"][0] == "4901" and snap["lines"][-1] == "5000"
        events = run(client, command="sh", args=["-c", "head -c 200000 /dev/zero | tr '\\0' a"])
        assert [len(line) for line in lines_of(events, "stdout")] == [65536, 65536, 65536, 3392]


def test_sigterm_stops_agent_and_its_processes(tmp_path: Path) -> None:
    agent = AgentProcess(root=str(tmp_path)).start()
    try:
        with httpx.Client(base_url=agent.url, timeout=10) as client:
            pid = start(client, command="sleep", args=["30"])["pid"]
        assert agent.proc is not None
        agent.proc.terminate()
        assert agent.proc.wait(10) == 0
        wait_for(lambda: not pid_alive(pid))
        assert "shutting down" in agent.log_text()
    finally:
        agent.cleanup()


def test_startup_time_from_bundle(capsys: pytest.CaptureFixture[str]) -> None:
    """Sanity bound only (the VM is noisy); real numbers: python -m cellbox.agent.startup_bench."""
    from cellbox.agent import startup_bench

    result = startup_bench.run(runs=3)
    with capsys.disabled():
        listen = [round(v, 1) for v in result["listen"]]
        health = [round(v, 1) for v in result["health"]]
        print(f"\nagent start-up (python -S -E, ms): listen={listen} health={health}")
    assert min(result["listen"]) < 500 and min(result["health"]) < 2000


def test_cli_usage() -> None:
    import subprocess

    from cellbox.agent.harness import SRC_DIR

    env = dict(os.environ, PYTHONPATH=SRC_DIR)
    ok = subprocess.run([sys.executable, "-m", "cellbox.agent", "--help"], capture_output=True, text=True, env=env)
    assert ok.returncode == 0 and "--root" in ok.stderr
    bad = subprocess.run([sys.executable, "-m", "cellbox.agent", "--bogus"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "unknown option" in bad.stderr


def test_detached_run_outlives_its_stream_and_takes_stdin(client: httpx.Client) -> None:
    """``detach`` + ``stdin_mode: pipe`` on a run (the host's E2B view, cellbox/e2b/): the
    process keeps running when the stream is cut, and its stdin is writable; without
    ``detach`` a cut stream still kills the run (Tensorlake's behaviour, unchanged)."""
    def first_pid(body: dict[str, Any]) -> int:
        with client.stream("POST", "/api/v1/processes/run", json=body) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if line.startswith("data:") and '"pid"' in line:
                    return int(json.loads(line[5:])["pid"])
        raise AssertionError("no start event")

    kept = first_pid({"command": "cat", "stdin_mode": "pipe", "detach": True})
    assert client.get(f"/api/v1/processes/{kept}").json()["status"] == "running"
    assert client.post(f"/api/v1/processes/{kept}/stdin", content=b"fed\n").status_code == 204
    assert client.post(f"/api/v1/processes/{kept}/stdin/close").status_code == 204
    info = wait_exit(client, kept)
    assert info["exit_code"] == 0
    assert client.get(f"/api/v1/processes/{kept}/stdout").json()["lines"] == ["fed"]
    cut = first_pid({"command": "sleep", "args": ["600"]})
    assert wait_exit(client, cut)["status"] in ("signaled", "exited")  # the stream's end killed it
