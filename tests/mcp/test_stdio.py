"""``cellbox mcp`` over stdio, driven by the MCP SDK's own client, against the real server.

The MCP server is a subprocess of the client (as in Claude Desktop, Cursor and the
other hosts) and acts with the key the CLI finds (here root's admin key). Each
hostile input must come back as an error result whose text names the problem,
never a traceback, and must leave nothing behind.
"""

from __future__ import annotations

import base64
from pathlib import Path

from mcp import Client

from cellbox.mcp import limits

from .harness import call, session, stdio_target

EXPECTED_TOOLS = {
    "create_sandbox", "get_sandbox", "list_sandboxes", "terminate_sandbox", "suspend_sandbox", "resume_sandbox",
    "snapshot_sandbox", "delete_snapshot", "clone_sandbox", "run_command", "start_process",
    "read_process_output", "kill_process", "list_processes", "read_file", "write_file", "list_files", "delete_file",
}


def assert_clear_error(answer, *words: str) -> None:
    assert not answer.ok, answer
    assert "Traceback" not in answer.text and answer.text.strip(), answer.text
    for word in words:
        assert word.lower() in answer.text.lower(), (word, answer.text)


async def _new(client: Client, tracker, **args) -> str:
    made = await call(client, "create_sandbox", memory_mb=512, **args)
    assert made.ok, made.text
    return tracker.add(made.data["id"])


def test_tools_and_schemas(live_server) -> None:
    async def flow(client: Client):
        tools = {t.name: t for t in (await client.list_tools()).tools}
        templates = (await client.list_resource_templates()).resource_templates
        return tools, templates

    tools, templates = session(stdio_target(live_server.api_url), flow)
    assert EXPECTED_TOOLS <= set(tools)
    run = tools["run_command"].input_schema["properties"]
    assert run["max_output_bytes"]["maximum"] == limits.OUTPUT_MAX  # limits are in the schema the model sees
    assert run["timeout"]["maximum"] == limits.TIMEOUT_MAX
    assert [t.uri_template for t in templates] == ["cellbox://sandboxes/{sandbox_id}/files/{+path}"]


def test_commands_files_processes(live_server, tracker) -> None:
    async def flow(client: Client) -> None:
        sid = await _new(client, tracker)
        ran = await call(client, "run_command", sandbox_id=sid, command="echo out; echo err >&2; exit 3")
        assert ran.ok and ran.data["exit_code"] == 3, ran.text
        assert (ran.data["stdout"], ran.data["stderr"], ran.data["truncated"]) == ("out", "err", False)
        env = await call(client, "run_command", sandbox_id=sid, command="pwd; echo $GREETING",
                         working_dir="/tmp", env={"GREETING": "hi there"})
        assert env.data["stdout"] == "/tmp\nhi there", env.text

        assert (await call(client, "write_file", sandbox_id=sid, path="/work/a/b.txt", content="hello\n")).ok
        blob = bytes(range(256))
        wrote = await call(client, "write_file", sandbox_id=sid, path="/work/a/blob.bin",
                           content=base64.b64encode(blob).decode(), encoding="base64")
        assert wrote.data["bytes"] == 256, wrote.text
        text = await call(client, "read_file", sandbox_id=sid, path="/work/a/b.txt")
        assert (text.data["content"], text.data["encoding"]) == ("hello\n", "utf-8")
        binary = await call(client, "read_file", sandbox_id=sid, path="/work/a/blob.bin")
        assert binary.data["encoding"] == "base64" and base64.b64decode(binary.data["content"]) == blob
        listing = await call(client, "list_files", sandbox_id=sid, path="/work/a")
        assert {(e["name"], e["size"]) for e in listing.data["entries"]} == {("b.txt", 6), ("blob.bin", 256)}
        resource = await client.read_resource(f"cellbox://sandboxes/{sid}/files/work/a/b.txt")
        assert resource.contents[0].text == "hello\n"

        started = await call(client, "start_process", sandbox_id=sid, command="for i in 1 2 3; do echo n$i; done")
        pid = started.data["pid"]
        for _ in range(100):
            out = await call(client, "read_process_output", sandbox_id=sid, pid=pid)
            if out.data["status"] != "running":
                break
        assert (out.data["exit_code"], out.data["output"]) == (0, "n1\nn2\nn3"), out.text
        tail = await call(client, "read_process_output", sandbox_id=sid, pid=pid, tail=1)
        assert tail.data["output"] == "n3"
        assert (await call(client, "delete_file", sandbox_id=sid, path="/work/a")).ok
        assert_clear_error(await call(client, "read_file", sandbox_id=sid, path="/work/a/b.txt"), "not")
        assert (await call(client, "terminate_sandbox", sandbox_id=sid)).ok
        assert_clear_error(await call(client, "run_command", sandbox_id=sid, command="true"))

    session(stdio_target(live_server.api_url), flow)


def test_output_and_time_limits(live_server, tracker) -> None:
    async def flow(client: Client) -> None:
        sid = await _new(client, tracker)
        flood = await call(client, "run_command", sandbox_id=sid, command="yes 0123456789", max_output_bytes=5000)
        assert flood.ok and flood.data["truncated"] and flood.data["exit_code"] is None, flood.text[:300]
        assert len(flood.data["stdout"].encode()) <= 5000
        # the runaway command does not run on: the agent killed it when we stopped reading
        for _ in range(50):
            procs = (await call(client, "list_processes", sandbox_id=sid)).data["processes"]
            yes = [p for p in procs if "yes 0123456789" in " ".join(p["args"])]
            if yes and yes[0]["status"] != "running":
                break
        assert yes and yes[0]["status"] != "running", procs
        slow = await call(client, "run_command", sandbox_id=sid, command="echo start; sleep 30", timeout=1)
        assert slow.data["timed_out"] and slow.data["stdout"] == "start", slow.text
        await call(client, "run_command", sandbox_id=sid, command="head -c 3000000 /dev/zero | tr '\\0' x > /big")
        big = await call(client, "read_file", sandbox_id=sid, path="/big", max_bytes=1000)
        assert big.data["truncated"] and big.data["bytes"] == 1000 and big.data["content"] == "x" * 1000
        assert_clear_error(await call(client, "read_file", sandbox_id=sid, path="/big", max_bytes=limits.READ_MAX + 1),
                           "max_bytes")
        assert_clear_error(await call(client, "run_command", sandbox_id=sid, command="true",
                                      max_output_bytes=limits.OUTPUT_MAX + 1), "max_output_bytes")
        assert_clear_error(await call(client, "run_command", sandbox_id=sid, command="true", timeout=10_000), "timeout")
        assert_clear_error(await call(client, "run_command", sandbox_id=sid, command="x" * (limits.COMMAND_MAX_CHARS + 1)),
                           "command")

    session(stdio_target(live_server.api_url), flow)


def test_hostile_inputs(live_server, tracker) -> None:
    host_name = Path("/etc/hostname").read_text()

    async def flow(client: Client) -> None:
        sid = await _new(client, tracker)
        for bad_path in ("/work/../../etc/passwd", "etc/passwd", "/tmp/\x00x", ""):
            assert_clear_error(await call(client, "read_file", sandbox_id=sid, path=bad_path), "path")
            assert_clear_error(await call(client, "write_file", sandbox_id=sid, path=bad_path, content="x"), "path")
        assert_clear_error(await call(client, "delete_file", sandbox_id=sid, path="/"), "refusing")
        # a symlink to / inside the sandbox leads to the sandbox's own root, not the host's
        await call(client, "run_command", sandbox_id=sid, command="ln -s / /tmp/root")
        seen = await call(client, "read_file", sandbox_id=sid, path="/tmp/root/etc/hostname")
        assert seen.ok and seen.data["content"] != host_name, seen.text
        for bad_id in ("../../etc", "A" * 10, "x" * 200, "id with spaces", ""):
            assert_clear_error(await call(client, "get_sandbox", sandbox_id=bad_id), "sandbox_id")
        assert_clear_error(await call(client, "run_command", sandbox_id="zzzzzzzzzzzzzzzzzzzzz", command="id"),
                           "not found")
        assert_clear_error(await call(client, "read_process_output", sandbox_id=sid, pid=999999), "not")
        assert_clear_error(await call(client, "read_process_output", sandbox_id=sid, pid=-1), "pid")
        assert_clear_error(await call(client, "write_file", sandbox_id=sid, path="/x", content="!!", encoding="base64"),
                           "base64")
        assert_clear_error(await call(client, "run_command", sandbox_id=sid, command="true", env={"BAD KEY": "v"}), "env")
        assert_clear_error(await call(client, "run_command", sandbox_id=sid, command="echo a\x00; rm -rf /"), "NUL")
        assert_clear_error(await call(client, "create_sandbox", memory_mb=10 ** 9), "memory_mb")
        assert_clear_error(await call(client, "create_sandbox", image="../../etc"), "image")
        assert_clear_error(await call(client, "create_sandbox", memory_mb=512, image="no/such-image"), "image")
        assert_clear_error(await call(client, "clone_sandbox", sandbox_id=sid, times=1000), "times")
        assert_clear_error(await call(client, "suspend_sandbox", sandbox_id=sid), "named")
        for uri in (f"cellbox://sandboxes/{sid}/files/..%2F..%2Fetc%2Fpasswd", f"cellbox://sandboxes/{sid}/files/../x"):
            try:
                await client.read_resource(uri)
            except Exception as exc:  # the SDK raises the protocol error
                assert "Traceback" not in str(exc)
            else:
                raise AssertionError(f"{uri} was served")
        assert (await call(client, "get_sandbox", sandbox_id=sid)).data["status"] == "running"

    session(stdio_target(live_server.api_url), flow)
    cat_after = Path("/etc/hostname").read_text()
    assert cat_after == host_name


def test_unreachable_cellbox_server_is_a_clear_error() -> None:
    from ..sdk.live_server import free_port

    async def flow(client: Client) -> None:
        answer = await call(client, "list_sandboxes")
        assert_clear_error(answer, "127.0.0.1")

    session(stdio_target(f"http://127.0.0.1:{free_port()}", api_key="cbx_unused"), flow)
