"""Restart policies, health checks, managed-process restart and PTY sessions through the
SDK (sync and async) against a live server (issue 14)."""

from __future__ import annotations

import asyncio
import time

import pytest

from cellbox.sdk import AsyncSandbox, HealthCheck, InvalidRequest, NotFound, RestartPolicy

pytestmark = pytest.mark.root


def _until(check, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)
    return value


def test_sync_restart_policy_health_and_restart(sbx):
    proc = sbx.start_process("sh", ["-c", "exit 2"], name="crashy",
                             restart=RestartPolicy("on_failure", max_restarts=2, initial_backoff_ms=10))
    assert proc.info().managed["restart"] == {"policy": "on_failure", "max_restarts": 2, "initial_backoff_ms": 10,
                                              "max_backoff_ms": 30000}
    byname = sbx.get_process("crashy")
    info = _until(lambda: (i := byname.info()).managed["status"] == "stopped" and i)
    assert info.restart_count == 2 and info.exit_code == 2  # the budget, then it stays down
    revived = byname.restart()  # a manual restart revives a stopped one
    assert revived.name == "crashy" and revived.pid != proc.pid and byname.pid == revived.pid

    probe = sbx.start_process("sleep", ["600"], restart="never",
                              health_check=HealthCheck("tcp", 9, initial_delay_ms=0, interval_ms=50,
                                                       failure_threshold=1))
    assert _until(lambda: probe.info().health_status == "unhealthy")
    assert probe.info().running  # policy never: it is left running
    probe.kill()
    plain = sbx.start_process("sleep", ["600"])
    with pytest.raises(InvalidRequest, match="not a managed process"):
        plain.restart()
    with pytest.raises(NotFound):
        sbx.get_process("nobody-has-this-name").info()
    with pytest.raises(InvalidRequest):
        sbx.start_process("true", restart="sometimes")
    with pytest.raises(InvalidRequest):
        sbx.start_process("true", health_check=HealthCheck("udp", 53))
    plain.kill()


def test_sync_pty_sessions(sandboxes):
    a, b = sandboxes.create(), sandboxes.create()
    term = a.pty("/bin/sh")
    sid, token = term.session_id, term.token
    term.close()
    [listed] = a.list_ptys()
    assert listed.session_id == sid and listed.is_alive and "token" not in listed.raw
    assert b.list_ptys() == []
    with pytest.raises(NotFound):
        b.kill_pty(sid)  # another sandbox's session is not there
    with pytest.raises(NotFound):
        a.kill_pty("../../processes")
    again = a.attach_pty(sid, token)
    again.send("exit 5\n")
    assert again.wait(timeout=30) == 5
    a.kill_pty(sid)
    assert a.list_ptys() == []


def test_async_supervision_and_ptys(live_server, tracker):
    async def flow() -> None:
        async with await AsyncSandbox.create(memory_mb=512, api_url=live_server.api_url) as sbx:
            tracker.add(sbx.id)
            proc = await sbx.start_process("sleep", ["600"], name="svc", max_restarts=1)
            assert (await proc.info()).managed["restart"]["max_restarts"] == 1
            info = await sbx.get_process("svc").restart()
            assert info.pid != proc.pid and info.name == "svc"
            await sbx.get_process("svc").kill()
            term = await sbx.pty("/bin/sh")
            await term.close()
            [session] = await sbx.list_ptys()
            await sbx.kill_pty(session.session_id)
            assert await sbx.list_ptys() == []

    asyncio.run(flow())
