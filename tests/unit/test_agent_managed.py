"""In-sandbox agent: managed (supervised) processes -- restart policies, backoff,
health checks, the restart route, DELETE with a stop grace, names."""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from typing import Any, Iterator

import httpx
import pytest

from .test_agent_pty import AgentProcess, pid_alive, wait_for

pytestmark = pytest.mark.timeout(60)

FAST = {"initial_backoff_ms": 100, "max_backoff_ms": 400}


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    with AgentProcess("--subreaper", root=str(tmp_path_factory.mktemp("root"))) as proc:
        yield proc


@pytest.fixture()
def client(agent: AgentProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=agent.url, timeout=20) as c:
        yield c


def start(client: httpx.Client, **body: Any) -> dict[str, Any]:
    r = client.post("/api/v1/processes", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def get(client: httpx.Client, ref: Any) -> dict[str, Any]:
    r = client.get(f"/api/v1/processes/{ref}")
    assert r.status_code == 200, r.text
    return r.json()


def managed(client: httpx.Client, ref: Any) -> dict[str, Any]:
    return get(client, ref)["managed"]  # type: ignore[no-any-return]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------ policies
def test_on_failure_restarts_with_growing_backoff(client: httpx.Client) -> None:
    info = start(client, command="sh", args=["-c", "echo run; exit 1"], name="crasher", restart=FAST)
    m = info["managed"]
    assert m["name"] == "crasher" and isinstance(m["id"], str) and m["restart"] == {
        "policy": "on_failure", "max_restarts": None, **FAST}
    assert m["health_status"] == "disabled" and m["health_check"] is None
    delays: dict[int, int] = {}  # restart_count -> planned backoff (ms)

    def observe() -> bool:
        m = managed(client, "crasher")
        if m["status"] == "backing_off" and m["next_restart_at"] and m["last_exit"]:
            delays.setdefault(m["restart_count"], m["next_restart_at"] - m["last_exit"]["ended_at"])
        return m["restart_count"] >= 4

    wait_for(observe, timeout=10, interval=0.01)
    m = managed(client, "crasher")
    assert m["last_exit"]["exit_code"] == 1 and m["last_exit"]["oom_killed"] is False
    # 100, 200, 400, 400 ms (± the time between exit and the decision)
    for count, expected in [(0, 100), (1, 200), (2, 400), (3, 400)]:
        if count in delays:
            assert expected - 5 <= delays[count] <= expected + 150, delays
    assert len(delays) >= 2, delays
    # output of every incarnation lands in one log
    lines = client.get("/api/v1/processes/crasher/output").json()["lines"]
    assert lines.count("run") >= 4
    # old incarnations are not listed separately
    names = [p.get("name") for p in client.get("/api/v1/processes").json()["processes"]]
    assert names.count("crasher") == 1
    assert client.delete("/api/v1/processes/crasher").status_code == 204
    assert managed(client, "crasher")["status"] == "stopped"


def test_on_failure_does_not_restart_after_success(client: httpx.Client) -> None:
    info = start(client, command="true", restart={"policy": "on_failure", **FAST})
    wait_for(lambda: managed(client, info["pid"])["status"] == "stopped")
    final = get(client, info["pid"])
    assert final["status"] == "exited" and final["exit_code"] == 0 and final["managed"]["restart_count"] == 0


def test_always_restarts_after_exit_zero_and_follow_spans_restarts(client: httpx.Client) -> None:
    info = start(client, command="sh", args=["-c", "echo tick"], restart={"policy": "always", "max_restarts": 2,
                                                                          "initial_backoff_ms": 50})
    with client.stream("GET", f"/api/v1/processes/{info['pid']}/output/follow") as r:
        events = [json.loads(line[5:]) for line in r.iter_lines() if line.startswith("data:")]
    ticks = [e["line"] for e in events if e.get("line") == "tick"]
    assert len(ticks) == 3  # the first run + 2 restarts, then the stream ended
    m = managed(client, info["pid"])
    assert m["status"] == "stopped" and m["restart_count"] == 2 and "limit" in m["last_error"]


def test_never_does_not_restart(client: httpx.Client) -> None:
    info = start(client, command="sh", args=["-c", "exit 1"], restart={"policy": "never"})
    wait_for(lambda: managed(client, info["pid"])["status"] == "stopped")
    time.sleep(0.3)
    final = get(client, info["pid"])
    assert final["pid"] == info["pid"] and final["exit_code"] == 1 and final["managed"]["restart_count"] == 0


def test_max_restarts_and_spawn_failure_on_restart(client: httpx.Client, tmp_path: Any) -> None:
    script = tmp_path / "svc.sh"
    script.write_text(f"#!/bin/sh\nrm -f {script}\nexit 3\n")  # deletes itself: the restart cannot exec
    script.chmod(0o755)
    info = start(client, command=str(script), restart={"max_restarts": 3, "initial_backoff_ms": 20})
    wait_for(lambda: managed(client, info["pid"])["status"] == "stopped", timeout=10)
    m = managed(client, info["pid"])
    assert m["restart_count"] == 3 and m["last_exit"]["exit_code"] == 3
    assert "limit" in m["last_error"]


# -------------------------------------------------------------------- health
def test_http_health_check_goes_healthy(agent: AgentProcess, client: httpx.Client) -> None:
    port = free_port()
    info = start(
        client,
        command=sys.executable,
        args=["-m", "http.server", str(port), "--bind", "127.0.0.1"],
        name="web",
        health_check={"type": "http", "port": port, "path": "/", "initial_delay_ms": 100, "interval_ms": 100},
    )
    m = info["managed"]
    assert m["status"] == "starting" and m["health_status"] == "starting"
    assert m["health_check"] == {"type": "http", "port": port, "path": "/", "initial_delay_ms": 100,
                                 "interval_ms": 100, "timeout_ms": 500, "failure_threshold": 3}
    wait_for(lambda: managed(client, "web")["health_status"] == "healthy", timeout=15)
    m = managed(client, "web")
    assert m["status"] == "running" and m["consecutive_health_failures"] == 0 and m["restart_count"] == 0
    assert len(os.listdir(f"/proc/{agent.agent_pid}/task")) == 1  # probes use no resolver thread
    assert client.delete("/api/v1/processes/web").status_code == 204
    wait_for(lambda: get(client, "web")["status"] != "running")


def test_tcp_health_check_on_dead_port_restarts(client: httpx.Client) -> None:
    port = free_port()
    info = start(
        client,
        command="sleep",
        args=["60"],
        health_check={"type": "tcp", "port": port, "initial_delay_ms": 0, "interval_ms": 50, "timeout_ms": 200,
                      "failure_threshold": 2},
        restart=FAST,
    )
    first_pid = info["pid"]
    wait_for(lambda: managed(client, first_pid)["restart_count"] >= 1, timeout=10)
    m = managed(client, first_pid)
    assert m["last_exit"]["signal"] == 15  # SIGTERM from the supervisor
    assert "health check failed" in m["last_error"]
    assert not pid_alive(first_pid)
    assert get(client, first_pid)["pid"] != first_pid  # the old pid resolves to the new incarnation
    client.delete(f"/api/v1/processes/{first_pid}")


def test_unhealthy_with_never_policy_keeps_running(client: httpx.Client) -> None:
    port = free_port()
    info = start(client, command="sleep", args=["60"], restart={"policy": "never"},
                 health_check={"type": "http", "port": port, "initial_delay_ms": 0, "interval_ms": 50,
                               "failure_threshold": 2})
    wait_for(lambda: managed(client, info["pid"])["health_status"] == "unhealthy")
    final = get(client, info["pid"])
    assert final["status"] == "running" and final["managed"]["consecutive_health_failures"] >= 2
    client.delete(f"/api/v1/processes/{info['pid']}")


# ------------------------------------------------------------- restart/delete
def test_restart_route(client: httpx.Client) -> None:
    info = start(client, command="sleep", args=["60"], name="svc-r")
    r = client.post("/api/v1/processes/svc-r/restart")
    assert r.status_code == 200, r.text
    new = r.json()
    assert new["pid"] != info["pid"] and new["status"] == "running" and new["managed"]["restart_count"] == 1
    assert new["managed"]["last_exit"]["signal"] == 15
    assert not pid_alive(info["pid"]) and pid_alive(new["pid"])
    assert get(client, "svc-r")["pid"] == new["pid"]
    assert get(client, info["pid"])["pid"] == new["pid"]
    # restarting a stopped managed process revives it
    assert client.delete("/api/v1/processes/svc-r").status_code == 204
    wait_for(lambda: get(client, "svc-r")["status"] != "running")
    r = client.post("/api/v1/processes/svc-r/restart")
    assert r.status_code == 200 and r.json()["status"] == "running" and r.json()["managed"]["status"] == "running"
    client.delete("/api/v1/processes/svc-r")
    # not managed / unknown
    plain = start(client, command="sleep", args=["60"])
    r = client.post(f"/api/v1/processes/{plain['pid']}/restart")
    assert r.status_code == 400 and r.json()["code"] == "NOT_MANAGED"
    client.delete(f"/api/v1/processes/{plain['pid']}")
    assert client.post("/api/v1/processes/no-such/restart").status_code == 404


def test_delete_stops_without_restart(client: httpx.Client) -> None:
    info = start(client, command="sleep", args=["60"], name="stopper", restart={"policy": "always", **FAST})
    assert client.delete("/api/v1/processes/stopper").status_code == 204
    assert managed(client, "stopper")["status"] == "stopped"
    wait_for(lambda: get(client, "stopper")["status"] != "running")
    time.sleep(0.5)
    final = get(client, "stopper")
    assert final["pid"] == info["pid"] and final["signal"] == 15 and final["managed"]["restart_count"] == 0


def test_delete_escalates_to_sigkill_after_grace(client: httpx.Client) -> None:
    info = start(client, command="sh", args=["-c", "trap '' TERM; echo armed; sleep 60"], name="stubborn",
                 stop_grace_ms=5000)
    wait_for(lambda: "armed" in client.get("/api/v1/processes/stubborn/output").json()["lines"])
    t0 = time.monotonic()
    assert client.delete("/api/v1/processes/stubborn", params={"stop_grace_ms": 300}).status_code == 204
    final = wait_for(lambda: (i := get(client, info["pid"]))["status"] != "running" and i)
    assert final["signal"] == 9 and 0.25 <= time.monotonic() - t0 < 4
    assert final["managed"]["status"] == "stopped"


# --------------------------------------------------------------------- names
def test_names_lookup_conflict_and_reuse(client: httpx.Client) -> None:
    info = start(client, command="sleep", args=["60"], name="my svc")
    assert get(client, "my%20svc")["pid"] == info["pid"]
    r = client.post("/api/v1/processes", json={"command": "true", "name": "my svc"})
    assert r.status_code == 409 and r.json()["code"] == "NAME_TAKEN"
    client.delete("/api/v1/processes/my%20svc")
    again = start(client, command="sleep", args=["60"], name="my svc")  # a stopped name is free again
    assert get(client, "my%20svc")["pid"] == again["pid"]
    client.delete("/api/v1/processes/my%20svc")
    for bad in ["", "a/b", "123"]:
        r = client.post("/api/v1/processes", json={"command": "true", "name": bad})
        assert r.status_code == 400 and r.json()["code"] == "INVALID_REQUEST", bad


def test_validation(client: httpx.Client) -> None:
    bad = [
        {"restart": {"policy": "sometimes"}},
        {"restart": {"initial_backoff_ms": -1}},
        {"restart": {"initial_backoff_ms": 1000, "max_backoff_ms": 10}},
        {"restart": "always"},
        {"health_check": {"type": "udp", "port": 80}},
        {"health_check": {"type": "tcp", "port": 0}},
        {"health_check": {"type": "http", "port": 80, "path": "no-slash"}},
        {"health_check": {"type": "tcp", "port": 80, "failure_threshold": 0}},
        {"name": "x", "stop_grace_ms": -5},
    ]
    for extra in bad:
        r = client.post("/api/v1/processes", json={"command": "true", **extra})
        assert r.status_code == 400 and r.json()["code"] == "INVALID_REQUEST", (extra, r.text)
    r = client.post("/api/v1/processes", json={"command": "/no/such/binary", "name": "ghost"})
    assert r.status_code == 400 and r.json()["code"] == "COMMAND_NOT_FOUND"
    assert client.get("/api/v1/processes/ghost").status_code == 404
    start(client, command="true", name="ghost")  # the failed start did not take the name


def test_agent_shutdown_does_not_restart(tmp_path: Any) -> None:
    with AgentProcess(root=str(tmp_path)) as agent, httpx.Client(base_url=agent.url, timeout=20) as client:
        info = start(client, command="sleep", args=["60"], restart={"policy": "always", "initial_backoff_ms": 0})
        assert agent.stop() == 0
        time.sleep(0.2)
        assert not pid_alive(info["pid"])
        out = agent.log_text()
        assert "Traceback" not in out, out


def test_follow_ends_when_stopped_while_backing_off(client: httpx.Client) -> None:
    info = start(client, command="sh", args=["-c", "echo once; exit 1"], restart={"initial_backoff_ms": 60_000})
    wait_for(lambda: managed(client, info["pid"])["status"] == "backing_off")
    assert managed(client, info["pid"])["next_restart_at"] > time.time() * 1000
    lines: list[str] = []

    def follow() -> None:
        with httpx.stream("GET", f"{client.base_url}/api/v1/processes/{info['pid']}/output/follow", timeout=20) as r:
            lines.extend(line for line in r.iter_lines() if line.startswith("data:"))

    thread = threading.Thread(target=follow)
    thread.start()
    time.sleep(0.3)
    assert thread.is_alive()  # still following: the process may come back
    client.delete(f"/api/v1/processes/{info['pid']}")
    thread.join(5)
    assert not thread.is_alive() and any("once" in line for line in lines)
