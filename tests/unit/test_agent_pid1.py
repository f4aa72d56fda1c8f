"""In-sandbox agent: PID 1 duties (orphan reaping, SIGTERM) and OOM reporting."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
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

from cellbox.agent.oom import OomCounter, parse_oom_kill

pytestmark = pytest.mark.timeout(60)


def run(client: httpx.Client, **body: Any) -> list[dict[str, Any]]:
    events = []
    with client.stream("POST", "/api/v1/processes/run", json=body) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if line.startswith("data:"):
                events.append(json.loads(line[5:]))
    return events


def stdout(events: list[dict[str, Any]]) -> list[str]:
    return [e["line"] for e in events if e.get("stream") == "stdout"]


def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, ppid) of a host pid, or None if it does not exist."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return fields[0], int(fields[1])


def children_of(ppid: int) -> list[tuple[int, str]]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = proc_stat(int(entry))
            if st is not None and st[1] == ppid:
                found.append((int(entry), st[0]))
    return found


def wait_for(predicate: Any, timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


ORPHAN_SCRIPT = "sh -c 'sleep 0.4; echo bye' >/dev/null 2>&1 & echo $!"


# ------------------------------------------------------------ orphan reaping
def test_orphans_are_reaped_by_subreaper_agent(tmp_path: Path) -> None:
    with (
        AgentProcess("--subreaper", root=str(tmp_path)) as agent,
        httpx.Client(base_url=agent.url, timeout=10) as client,
    ):
        events = run(client, command="sh", args=["-c", ORPHAN_SCRIPT])
        assert events[-1] == {"exit_code": 0, "reason": "exited"}
        orphan = int(stdout(events)[0])
        st = proc_stat(orphan)
        assert st is not None and st[1] == agent.agent_pid  # reparented to the agent
        wait_for(lambda: proc_stat(orphan) is None, 5)  # ... and reaped by it, no zombie
        assert [c for c in children_of(agent.agent_pid) if c[1] == "Z"] == []


def _unshare_works() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    try:
        return (
            subprocess.run(
                ["unshare", "--pid", "--fork", "--kill-child", "true"], timeout=10, capture_output=True
            ).returncode
            == 0
        )
    except (OSError, subprocess.SubprocessError):
        return False


@pytest.mark.skipif(not _unshare_works(), reason="needs root and unshare --pid")
def test_agent_as_pid1_in_pid_namespace(tmp_path: Path) -> None:
    agent = AgentProcess(root=str(tmp_path), wrapper=["unshare", "--pid", "--fork", "--kill-child"])
    agent.start()
    try:
        assert agent.agent_pid == 1
        assert agent.proc is not None
        host_pid = wait_for(lambda: [p for p, _ in children_of(agent.proc.pid)])[0]  # type: ignore[union-attr]
        with httpx.Client(base_url=agent.url, timeout=10) as client:
            events = run(client, command="sh", args=["-c", "echo $PPID"])
            assert stdout(events) == ["1"]
            for _ in range(3):
                events = run(client, command="sh", args=["-c", ORPHAN_SCRIPT])
                assert events[-1]["exit_code"] == 0
            time.sleep(0.1)
            assert len(children_of(host_pid)) >= 3  # the orphans now belong to PID 1
            wait_for(lambda: children_of(host_pid) == [], 5)  # all reaped: no zombies left
            # a normal process still gets its exit status despite the reaper loop
            events = run(client, command="sh", args=["-c", "exit 7"])
            assert events[-1] == {"exit_code": 7, "reason": "exited"}
        os.kill(host_pid, signal.SIGTERM)  # PID 1 must handle SIGTERM itself
        assert agent.proc.wait(10) == 0
    finally:
        agent.cleanup()


# ---------------------------------------------------------------- OOM: logic
def test_parse_oom_kill_v1_and_v2() -> None:
    assert parse_oom_kill("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n") == 3
    assert parse_oom_kill("low 0\nhigh 0\nmax 5\noom 2\noom_kill 1\noom_group_kill 0\n") == 1
    assert parse_oom_kill("oom 2\n") is None
    assert OomCounter(["/nonexistent/a", "/nonexistent/b"]).read() is None


@pytest.fixture()
def fake_oom(tmp_path: Path) -> Iterator[tuple[AgentProcess, Path]]:
    counter = tmp_path / "memory.events"
    counter.write_text("low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n")
    with AgentProcess("--oom-counter", str(counter), root=str(tmp_path)) as agent:
        yield agent, counter


def test_oom_kill_reported(fake_oom: tuple[AgentProcess, Path]) -> None:
    agent, counter = fake_oom
    # emulate the kernel: bump the cgroup's oom_kill counter, then SIGKILL the victim
    script = f"echo hungry; printf 'oom 1\\noom_kill 1\\n' > {counter}; kill -KILL $$"
    with httpx.Client(base_url=agent.url, timeout=10) as client:
        events = run(client, command="sh", args=["-c", script])
        assert stdout(events) == ["hungry"]
        assert events[-1] == {"signal": 9, "oom_killed": True, "reason": "oom_killed"}
        info = client.get(f"/api/v1/processes/{events[0]['pid']}").json()
        assert info["status"] == "oom_killed" and info["oom_killed"] is True and info["signal"] == 9
        # a later plain SIGKILL (counter unchanged) is not an OOM
        events = run(client, command="sh", args=["-c", "kill -KILL $$"])
        assert events[-1] == {"signal": 9, "reason": "signaled"}


def test_agent_kill_is_never_oom(fake_oom: tuple[AgentProcess, Path]) -> None:
    agent, counter = fake_oom
    with httpx.Client(base_url=agent.url, timeout=10) as client:
        pid = client.post("/api/v1/processes", json={"command": "sleep", "args": ["30"]}).json()["pid"]
        counter.write_text("oom_kill 5\n")  # some other process was OOM-killed meanwhile
        assert client.delete(f"/api/v1/processes/{pid}").status_code == 204
        info = wait_for(lambda: (i := client.get(f"/api/v1/processes/{pid}").json())["status"] != "running" and i)
        assert info["status"] == "signaled" and info["oom_killed"] is False


# ----------------------------------------------------------- OOM: real kernel
def _own_memory_cgroup_v1() -> Path | None:
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if "memory" in controllers.split(","):
                cg = Path("/sys/fs/cgroup/memory") / path.lstrip("/")
                if (cg / "memory.oom_control").exists() and os.access(cg, os.W_OK):
                    return cg
    except OSError:
        pass
    return None


@pytest.mark.skipif(
    os.geteuid() != 0 or _own_memory_cgroup_v1() is None, reason="needs root and a writable cgroup-v1 memory controller"
)
def test_real_oom_kill_in_memory_limited_cgroup() -> None:
    parent = _own_memory_cgroup_v1()
    assert parent is not None
    cg = parent / f"cellbox-agent-test-{os.getpid()}"
    cg.mkdir()
    agent: AgentProcess | None = None
    try:
        (cg / "memory.limit_in_bytes").write_text(str(160 << 20))
        agent = AgentProcess(
            "--oom-counter",
            str(cg / "memory.oom_control"),
            wrapper=["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(cg)],
        ).start()
        with httpx.Client(base_url=agent.url, timeout=30) as client:
            events = run(client, command=sys.executable, args=["-S", "-c", "a = b'x' * (600 << 20)"])
            assert events[-1] == {"signal": 9, "oom_killed": True, "reason": "oom_killed"}, events
            assert client.get("/api/v1/health").json() == {"healthy": True}  # the agent survived
    finally:
        if agent is not None:
            agent.cleanup()
        for _ in range(50):
            try:
                cg.rmdir()
                break
            except OSError:
                time.sleep(0.1)
