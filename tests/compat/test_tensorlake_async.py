"""The tensorlake SDK's async client (``AsyncSandbox``, 0.5.163) against cellbox: the
sync scenario of test_tensorlake_sdk.py (issue 14 item 10), through the real SDK and
the real server. Sandboxes are deleted by the ``made`` fixture's IDs.
"""

from __future__ import annotations

import asyncio
import os

import pytest
from tensorlake.sandbox import CheckpointType, SandboxError, StdinMode
from tensorlake.sandbox.async_sandbox import AsyncSandbox

pytestmark = pytest.mark.root


def _url(made) -> str:  # type: ignore[no-untyped-def]
    return made.server.api_url.replace("127.0.0.1", "localhost")  # localhost mode, as the sync tests


async def _create(made, **kw):  # type: ignore[no-untyped-def]
    kw.setdefault("memory_mb", 512)
    sbx = await AsyncSandbox.create(api_url=_url(made), **kw)
    made.ids.append(sbx.sandbox_id)
    return sbx


def test_async_run_processes_files(made):
    async def scenario() -> None:
        sbx = await _create(made)
        res = await sbx.run("sh", ["-c", "echo $GREETING; pwd; echo oops >&2; exit 3"], env={"GREETING": "hi"},
                            working_dir="/tmp")
        assert (res.exit_code, res.stdout.splitlines(), res.stderr) == (3, ["hi", "/tmp"], "oops")
        proc = await sbx.start_process("sh", ["-c", "read x; echo got:$x; echo n1"], stdin_mode=StdinMode.PIPE)
        await sbx.write_stdin(proc.pid, b"hello\n")
        assert [e.line for e in await sbx.follow_output(proc.pid)] == ["got:hello", "n1"]
        await sbx.write_file("/work/a.txt", b"alpha")
        assert (await sbx.read_file("/work/a.txt")).value == b"alpha"
        assert [e.name for e in (await sbx.list_directory("/work")).entries] == ["a.txt"]
        await sbx.delete_file("/work/a.txt")
        with pytest.raises(SandboxError):
            await sbx.read_file("/work/a.txt")
        # Two at once on one event loop: the async client's point.
        a, b = await asyncio.gather(sbx.run("echo", ["one"]), sbx.run("echo", ["two"]))
        assert (a.stdout.strip(), b.stdout.strip()) == ("one", "two")

    asyncio.run(scenario())


def test_async_suspend_resume_snapshot_get_or_create(made):
    async def scenario() -> None:
        name = f"compat-async-{os.getpid()}"
        sbx = await _create(made, name=name)
        await sbx.write_file("/data/keep.txt", b"before")
        await sbx.suspend()
        await sbx.resume()
        assert (await sbx.read_file("/data/keep.txt")).value == b"before"
        same = await AsyncSandbox.get_or_create(name, api_url=_url(made))
        assert same.sandbox_id == sbx.sandbox_id
        snap = await sbx.checkpoint(checkpoint_type=CheckpointType.MEMORY)
        assert snap is not None
        try:
            restored = await _create(made, snapshot_id=snap.snapshot_id)
            assert (await restored.read_file("/data/keep.txt")).value == b"before"
        finally:
            from tensorlake.sandbox import SandboxClient

            SandboxClient.for_localhost(api_url=_url(made)).delete_snapshot(snap.snapshot_id)
        await sbx.terminate()

    asyncio.run(scenario())
