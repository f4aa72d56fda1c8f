"""The tensorlake SDK methods the scenario tests do not reach (found by
``make compat-tensorlake``'s table, docs/compat-tensorlake.md), sync and async, each
driven once against the real server with its answer checked.
"""

from __future__ import annotations

import asyncio
import secrets
import time

import pytest
from tensorlake.sandbox import AsyncSandboxClient, CheckpointType, Sandbox, SandboxError, StdinMode
from tensorlake.sandbox.async_sandbox import AsyncSandbox

pytestmark = pytest.mark.root


def _url(made) -> str:  # type: ignore[no-untyped-def]
    return made.server.api_url.replace("127.0.0.1", "localhost")


def test_sync_lifecycle_and_process_calls(made, client):
    name = f"tlsweep-{secrets.token_hex(3)}"
    sbx = made.create(name=name)
    assert sbx.health().value is not None and sbx.daemon_info().value is not None
    assert sbx.info().sandbox_id == sbx.sandbox_id
    again = Sandbox.connect(sbx.sandbox_id, api_url=_url(made))
    assert again.run("echo", ["hi"]).stdout.strip() == "hi"
    bound = Sandbox.get_or_create(name, api_url=_url(made))
    assert bound.sandbox_id == sbx.sandbox_id
    assert sbx.sandbox_id in {s.sandbox_id for s in Sandbox.list(api_url=_url(made))}

    proc = sbx.start_process("sh", ["-c", "echo out; echo err >&2; cat"], stdin_mode=StdinMode.PIPE)
    sbx.close_stdin(proc.pid)
    deadline = time.monotonic() + 30
    while sbx.get_process(proc.pid).status.value == "running" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [line for line in sbx.get_stdout(proc.pid).lines] == ["out"]
    assert [line for line in sbx.get_stderr(proc.pid).lines] == ["err"]
    assert sorted(sbx.get_output(proc.pid).lines) == ["err", "out"]
    assert [e.line for e in sbx.follow_stdout(proc.pid)] == ["out"]
    assert [e.line for e in sbx.follow_stderr(proc.pid)] == ["err"]
    managed = sbx.start_process("sleep", ["300"], name="sweeper", restart={"policy": "always"})
    restarted = sbx.restart_process(managed.pid).value
    sbx.kill_process(restarted.pid)
    plain = sbx.start_process("sleep", ["300"])
    with pytest.raises(SandboxError, match="NOT_MANAGED"):  # only a managed process restarts
        sbx.restart_process(plain.pid)
    sbx.kill_process(plain.pid)
    assert sbx.get_logs().value is not None and sbx.list_log_processes().value is not None

    snap = sbx.checkpoint(checkpoint_type=CheckpointType.FILESYSTEM)
    assert snap.snapshot_id in {s.snapshot_id for s in sbx.list_snapshots()}
    assert Sandbox.get_snapshot(snap.snapshot_id, api_url=_url(made)).snapshot_id == snap.snapshot_id
    assert snap.snapshot_id in {s.snapshot_id for s in client.list_sandbox_snapshots(sbx.sandbox_id)}
    Sandbox.delete_snapshot(snap.snapshot_id, api_url=_url(made))
    with pytest.raises(SandboxError):
        Sandbox.get_snapshot(snap.snapshot_id, api_url=_url(made))

    client.expose_ports(sbx.sandbox_id, [8080])
    assert 8080 in client.get_port_access(sbx.sandbox_id).exposed_ports
    client.unexpose_ports(sbx.sandbox_id, [8080])
    assert 8080 not in (client.get_port_access(sbx.sandbox_id).exposed_ports or [])
    info = sbx.update(memory_mb=768)
    if getattr(info, "resource_resize", None) is not None:
        sbx.wait_for_resource_resize(info.resource_resize.generation, timeout=60)
    raw = client.create(memory_mb=512)
    made.ids.append(raw.sandbox_id)


def test_async_calls(made):
    async def scenario() -> None:
        sbx = await AsyncSandbox.create(api_url=_url(made), memory_mb=512)
        made.ids.append(sbx.sandbox_id)
        assert (await sbx.health()).value is not None and (await sbx.daemon_info()).value is not None
        assert (await sbx.status()) is not None
        proc = await sbx.start_process("sh", ["-c", "echo out; echo err >&2; cat"], stdin_mode=StdinMode.PIPE)
        await sbx.close_stdin(proc.pid)
        for _ in range(150):
            if (await sbx.get_process(proc.pid)).status.value != "running":
                break
            await asyncio.sleep(0.2)
        assert (await sbx.get_stdout(proc.pid)).lines == ["out"]
        assert (await sbx.get_stderr(proc.pid)).lines == ["err"]
        assert sorted((await sbx.get_output(proc.pid)).lines) == ["err", "out"]
        assert [e.line for e in await sbx.follow_stdout(proc.pid)] == ["out"]
        assert [e.line for e in await sbx.follow_stderr(proc.pid)] == ["err"]
        assert proc.pid in {p.pid for p in await sbx.list_processes()}
        long = await sbx.start_process("sleep", ["300"])
        await sbx.send_signal(long.pid, 15)
        other = await sbx.start_process("sleep", ["300"], name="sweeper", restart={"policy": "always"})
        restarted = (await sbx.restart_process(other.pid)).value
        await sbx.kill_process(restarted.pid)
        assert (await sbx.get_logs()).value is not None and (await sbx.list_log_processes()).value is not None
        assert list(await sbx.list_snapshots()) == []  # it has none
        copies = await sbx.copy()
        made.ids.extend(c.sandbox_id for c in copies.sandboxes)
        assert copies.source_sandbox_id == sbx.sandbox_id and len(copies.sandboxes) == 1

        ac = AsyncSandboxClient.for_localhost(api_url=_url(made))
        try:
            made_raw = await ac.create(memory_mb=512)
            made.ids.append(made_raw.sandbox_id)
            assert made_raw.sandbox_id in {s.sandbox_id for s in await ac.list()}
            assert (await ac.get_logs(made_raw.sandbox_id)).value is not None
            assert list(await ac.list_snapshots()) is not None
        finally:
            await ac.close()

    asyncio.run(scenario())
