"""The real ``e2b`` SDK (pinned in the test extra), unmodified, against a real cellbox server.

Configured only through its own settings (tests/compat/e2b_env.py). Each test names the
SDK calls it drives (``e2b_calls``), from which ``docs/compat-e2b.md`` is generated.
Every sandbox made is killed at teardown (through the cellbox API, whatever happened).
"""

from __future__ import annotations

import time

import httpx
import pytest

e2b = pytest.importorskip("e2b")
from e2b import Sandbox  # noqa: E402
from e2b import (  # noqa: E402
    AuthenticationException,
    CommandExitException,
    InvalidArgumentException,
    NotFoundException,
    SandboxException,
)

from ..keys import auth  # noqa: E402

pytestmark = pytest.mark.root
calls = pytest.mark.e2b_calls


@pytest.fixture
def sbx(e2b_env):
    return e2b_env.track(Sandbox.create(timeout=300, metadata={"suite": "e2b"}, envs={"FROM_CREATE": "yes"}))


@calls("Sandbox.create", "Sandbox.get_info", "Sandbox.list", "Sandbox.connect", "Sandbox.set_timeout",
       "Sandbox.kill", "Sandbox.is_running")
def test_lifecycle(e2b_env, sbx):
    info = sbx.get_info()
    assert info.sandbox_id == sbx.sandbox_id and info.metadata == {"suite": "e2b"}
    assert info.state.value == "running" and info.template_id == "base"
    listed = Sandbox.list(query=e2b.SandboxQuery(metadata={"suite": "e2b"})).next_items()
    assert [s.sandbox_id for s in listed] == [sbx.sandbox_id]
    before = info.end_at
    sbx.set_timeout(3600)
    assert sbx.get_info().end_at > before
    again = Sandbox.connect(sbx.sandbox_id)  # a second client for the same sandbox
    assert again.commands.run("echo same").stdout == "same\n"
    assert sbx.is_running()
    assert sbx.kill() is True
    assert not sbx.is_running()
    assert Sandbox.kill(sbx.sandbox_id) is False  # already gone: E2B's answer is False
    assert sbx.sandbox_id not in [s.sandbox_id for s in Sandbox.list().next_items()]


@calls("Sandbox.pause", "Sandbox.connect (resume)", "Sandbox.list (state=paused)")
def test_pause_and_resume_keep_files_and_processes(e2b_env, sbx):
    sbx.files.write("/tmp/kept.txt", "before pause")
    bg = sbx.commands.run("sleep 600", background=True)
    assert sbx.pause() is True
    paused = Sandbox.list(query=e2b.SandboxQuery(state=[e2b.SandboxState.PAUSED])).next_items()
    assert sbx.sandbox_id in [s.sandbox_id for s in paused]
    assert Sandbox.get_info(sbx.sandbox_id).state.value == "paused"
    back = Sandbox.connect(sbx.sandbox_id)  # E2B resumes a paused sandbox on connect
    assert Sandbox.get_info(sbx.sandbox_id).state.value == "running"
    assert back.files.read("/tmp/kept.txt") == "before pause"
    assert bg.pid in [p.pid for p in back.commands.list()]  # memory state came back too


@calls("commands.run", "commands.run (user=)", "Sandbox.create (envs)")
def test_commands_run_foreground(e2b_env, sbx):
    res = sbx.commands.run("echo out; echo err >&2; echo $GREETING $FROM_CREATE; pwd", envs={"GREETING": "hello"},
                           cwd="/tmp")
    assert res.exit_code == 0
    assert res.stdout == "out\nhello yes\n/tmp\n" and res.stderr == "err\n"  # envs of the create, and the call
    seen: list[str] = []
    sbx.commands.run("for i in 1 2 3; do echo $i; done", on_stdout=seen.append)
    assert "".join(seen) == "1\n2\n3\n"
    with pytest.raises(CommandExitException) as exc:
        sbx.commands.run("echo bad >&2; exit 3")
    assert exc.value.exit_code == 3 and exc.value.stderr == "bad\n"
    assert sbx.commands.run("id -u", user="root").stdout == "0\n"
    assert sbx.commands.run("id -un", user="nobody").stdout == "nobody\n"
    with pytest.raises(SandboxException, match="no-such-user"):
        sbx.commands.run("true", user="no-such-user")


@calls("commands.run (background)", "commands.send_stdin", "commands.stream_input", "commands.close_stdin",
       "commands.list", "commands.connect", "commands.kill", "CommandHandle.wait", "CommandHandle.kill",
       "CommandHandle.close_stdin", "CommandHandle.disconnect")
def test_commands_background_stdin_list_connect_kill(e2b_env, sbx):
    cat = sbx.commands.run("cat", background=True, stdin=True)
    sbx.commands.send_stdin(cat.pid, "line one\n")
    sbx.commands.close_stdin(cat.pid)
    res = cat.wait()
    assert res.stdout == "line one\n" and res.exit_code == 0

    sleeper = sbx.commands.run("echo started; sleep 600", background=True)
    assert sleeper.pid in [p.pid for p in sbx.commands.list()]
    attached = sbx.commands.connect(sleeper.pid)  # a second handle on the running command
    assert sbx.commands.kill(sleeper.pid) is True
    with pytest.raises(CommandExitException):
        attached.wait()
    assert sleeper.pid not in [p.pid for p in sbx.commands.list()]
    assert sbx.commands.kill(sleeper.pid) is False  # gone: E2B's answer is False

    fed = sbx.commands.run("cat", background=True, stdin=True)
    sbx.commands.stream_input(fed.pid, iter(["streamed ", b"input\n"]))
    fed.close_stdin()
    assert fed.wait().stdout == "streamed input\n"

    lasting = sbx.commands.run("sleep 2; echo survived", background=True)
    lasting.disconnect()  # E2B: the command keeps running without a client
    assert sbx.commands.connect(lasting.pid).wait().stdout.endswith("survived\n")

    other = sbx.commands.run("sleep 600", background=True)
    assert other.kill() is True
    with pytest.raises(CommandExitException):
        other.wait()


@calls("files.write", "files.read", "files.write_files", "files.list", "files.exists", "files.get_info",
       "files.make_dir", "files.rename", "files.remove")
def test_files(e2b_env, sbx):
    info = sbx.files.write("/work/notes/a.txt", "alpha")
    assert info.path == "/work/notes/a.txt"
    assert sbx.files.read("/work/notes/a.txt") == "alpha"
    assert sbx.files.read("/work/notes/a.txt", format="bytes") == b"alpha"
    blob = bytes(range(256)) * 1000
    sbx.files.write("/work/notes/blob.bin", blob)
    assert bytes(sbx.files.read("/work/notes/blob.bin", format="bytes")) == blob
    sbx.files.write_files([{"path": "/work/multi/x.txt", "data": "x"}, {"path": "/work/multi/y.txt", "data": "y"}])
    assert sorted(e.name for e in sbx.files.list("/work/multi")) == ["x.txt", "y.txt"]
    entry = sbx.files.get_info("/work/notes/a.txt")
    assert entry.type.value == "file" and entry.size == 5 and entry.name == "a.txt"
    assert sbx.files.make_dir("/work/new/deep") is True
    assert sbx.files.make_dir("/work/new/deep") is False  # exists: E2B's answer is False
    assert sbx.files.get_info("/work/new/deep").type.value == "dir"
    moved = sbx.files.rename("/work/notes/a.txt", "/work/new/b.txt")
    assert moved.path == "/work/new/b.txt" and not sbx.files.exists("/work/notes/a.txt")
    assert sbx.files.read("/work/new/b.txt") == "alpha"
    names = {e.path for e in sbx.files.list("/work", depth=3)}
    assert {"/work/new/b.txt", "/work/new/deep", "/work/multi/x.txt"} <= names
    sbx.files.remove("/work/new")
    assert not sbx.files.exists("/work/new/b.txt")
    with pytest.raises(NotFoundException):
        sbx.files.read("/work/new/b.txt")


@calls("files.watch_dir", "WatchHandle.get_new_events", "WatchHandle.stop")
def test_watch_dir(e2b_env, sbx):
    sbx.files.make_dir("/work/watched")
    handle = sbx.files.watch_dir("/work/watched")
    sbx.files.write("/work/watched/new.txt", "1")
    events = handle.get_new_events()
    assert ("new.txt", "create") in [(e.name, e.type.value) for e in events]
    sbx.files.write("/work/watched/new.txt", "22")
    sbx.files.remove("/work/watched/new.txt")
    kinds = {(e.name, e.type.value) for e in handle.get_new_events()}
    assert ("new.txt", "remove") in kinds
    handle.stop()


@calls("Sandbox.get_host")
def test_get_host_reaches_a_server_in_the_sandbox(e2b_env, sbx):
    sbx.files.write("/srv/index.html", "served from the sandbox")
    sbx.commands.run("cd /srv && python3 -m http.server 8000", background=True)
    host = sbx.get_host(8000)
    assert host == f"8000-{sbx.sandbox_id}.local"
    url = f"{e2b_env.sandbox_url}/index.html"
    token = {"e2b-traffic-access-token": sbx.traffic_access_token}
    deadline = time.monotonic() + 30
    while True:
        resp = httpx.get(url, headers={"Host": host, **token}, timeout=10)
        if resp.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert resp.status_code == 200 and resp.text == "served from the sandbox"
    # Without the sandbox's traffic token (or a key of its project) the port is closed.
    assert httpx.get(url, headers={"Host": host}, timeout=10).status_code == 401
    wrong = {"e2b-traffic-access-token": "0" * 64}
    assert httpx.get(url, headers={"Host": host, **wrong}, timeout=10).status_code == 401


@calls("Sandbox.connect (cross-project 404)", "Sandbox.kill (cross-project)")
def test_another_projects_key_sees_nothing(e2b_env, sbx):
    other = {"api_key": e2b_env.b.key}
    with pytest.raises(NotFoundException):
        Sandbox.connect(sbx.sandbox_id, **other)
    with pytest.raises(NotFoundException):
        Sandbox.get_info(sbx.sandbox_id, **other)
    assert Sandbox.kill(sbx.sandbox_id, **other) is False
    assert sbx.sandbox_id not in [s.sandbox_id for s in Sandbox.list(**other).next_items()]
    assert sbx.is_running()  # untouched
    # envd with another sandbox's token (or none): refused before anything is looked up.
    mine = e2b_env.track(Sandbox.create(timeout=120, **other), e2b_env.b)
    forged = httpx.get(f"{e2b_env.sandbox_url}/files", params={"path": "/etc/hostname"}, timeout=10,
                       headers={"E2b-Sandbox-Id": sbx.sandbox_id, "E2b-Sandbox-Port": "49983",
                                "X-Access-Token": mine._envd_access_token})
    assert forged.status_code == 401, forged.text
    bare = httpx.post(f"{e2b_env.sandbox_url}/process.Process/List", json={}, timeout=10,
                      headers={"E2b-Sandbox-Id": sbx.sandbox_id, "E2b-Sandbox-Port": "49983"})
    assert bare.status_code == 401 and bare.json()["code"] == "unauthenticated"
    # And a cellbox key of project b on the Tensorlake wire: the same 404.
    resp = httpx.get(f"{e2b_env.server.api_url}/sandboxes/{sbx.sandbox_id}",
                     headers={"Authorization": f"Bearer {e2b_env.b.key}"}, timeout=10)
    assert resp.status_code == 404


@calls("Sandbox.create (bad input)", "files (bad input)", "commands.connect (bad input)")
def test_bad_input_is_a_clear_error(e2b_env, sbx):
    with pytest.raises(SandboxException, match="no/such-template"):
        Sandbox.create(template="no/such-template")
    with pytest.raises(AuthenticationException):
        Sandbox.create(api_key="cbx_not_a_key")
    api = e2b_env.api_url
    key = {"X-API-KEY": e2b_env.a.key}
    for body, field in (({"templateID": "base", "timeout": -1}, "timeout"), ({}, "templateID"),
                        ({"templateID": "base", "metadata": {"k": 1}}, "metadata")):
        resp = httpx.post(f"{api}/sandboxes", json=body, headers=key, timeout=30)
        assert resp.status_code == 400 and field in resp.json()["message"], resp.text
    resp = httpx.post(f"{api}/sandboxes", content=b"{not json", headers=key, timeout=30)
    assert resp.status_code == 400, resp.text
    with pytest.raises(InvalidArgumentException, match="absolute"):
        sbx.files.read("relative/path")
    with pytest.raises(InvalidArgumentException, match="path is required"):
        sbx.files.list("")
    with pytest.raises(NotFoundException):
        sbx.files.list("/no/such/dir")
    with pytest.raises(SandboxException):
        sbx.commands.connect(999_999)
    # Hostile Connect requests with the right token: malformed, oversized, unknown method.
    envd = {"E2b-Sandbox-Id": sbx.sandbox_id, "E2b-Sandbox-Port": "49983", "X-Access-Token": sbx._envd_access_token,
            "Content-Type": "application/json"}
    rpc = f"{e2b_env.sandbox_url}/process.Process"
    bad = httpx.post(f"{rpc}/List", content=b"{nope", headers=envd, timeout=10)
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_argument", bad.text
    huge = httpx.post(f"{rpc}/SendInput", content=b'{"input": {"stdin": "' + b"A" * (9 << 20) + b'"}}',
                      headers=envd, timeout=60)
    assert huge.status_code in (413, 429) and huge.json()["code"] == "resource_exhausted", huge.text[:300]
    assert httpx.post(f"{rpc}/Nope", content=b"{}", headers=envd, timeout=10).status_code == 404
    assert sbx.commands.run("echo still fine").stdout == "still fine\n"


@calls("interop: tensorlake-made sandbox via E2B", "interop: E2B-made sandbox via tensorlake")
def test_both_sdks_see_the_same_sandboxes(e2b_env, sbx):
    from tensorlake.sandbox import SandboxClient

    api = e2b_env.server.api_url.replace("127.0.0.1", "localhost")
    tl = SandboxClient.for_localhost(api_url=api, namespace=e2b_env.a.name)  # the admin key, project a
    try:
        sbx.files.write("/tmp/from-e2b.txt", "e2b wrote this")
        tl_view = tl.connect(sbx.sandbox_id)
        assert tl_view.read_file("/tmp/from-e2b.txt").value == b"e2b wrote this"
        made = tl.create(memory_mb=512)
        e2b_env.made.append((e2b_env.a.name, made.sandbox_id))
        tl.connect(made.sandbox_id).write_file("/tmp/from-tl.txt", b"tensorlake wrote this")
        e2b_view = Sandbox.connect(made.sandbox_id)
        assert e2b_view.files.read("/tmp/from-tl.txt") == "tensorlake wrote this"
        assert e2b_view.commands.run("cat /tmp/from-tl.txt").stdout == "tensorlake wrote this\n"
    finally:
        tl.close()


@calls("pty.create", "pty.send_stdin", "pty.stream_input", "pty.resize", "pty.kill")
@pytest.mark.e2b_unsupported("pty.connect")
def test_pty(e2b_env, sbx):
    from e2b import PtySize

    term = sbx.pty.create(PtySize(rows=24, cols=80))
    sbx.pty.resize(term.pid, PtySize(rows=30, cols=100))
    sbx.pty.stream_input(term.pid, iter([b"echo stre", b"amed-in\n"]))
    sbx.pty.send_stdin(term.pid, b"stty size; echo pty-$((6*7)); exit 5\n")
    out = bytearray()
    with pytest.raises(CommandExitException) as exc:
        term.wait(on_pty=out.extend)
    assert exc.value.exit_code == 5
    # b"\rstreamed-in\r\n" is the command's output, not the echoed command line
    assert b"30 100" in out and b"pty-42" in out and b"\rstreamed-in\r\n" in out, bytes(out)[-500:]

    stuck = sbx.pty.create(PtySize(rows=24, cols=80))
    with pytest.raises(SandboxException, match="not supported"):
        sbx.pty.connect(stuck.pid)
    assert sbx.pty.kill(stuck.pid) is True
    with pytest.raises(CommandExitException):
        stuck.wait()
    assert sbx.pty.kill(stuck.pid) is False  # gone
    with pytest.raises(SandboxException):
        sbx.pty.resize(999_999, PtySize(rows=10, cols=10))


@calls("Sandbox.fork", "Sandbox.create_snapshot", "Sandbox.list_snapshots", "Sandbox.delete_snapshot",
       "Sandbox.create (template=snapshot ID)")
def test_fork_and_snapshots(e2b_env, sbx):
    sbx.files.write("/tmp/state.txt", "shared past")
    forks = sbx.fork(count=2)
    assert len(forks) == 2 and all(isinstance(f, Sandbox) for f in forks), forks
    for f in forks:
        e2b_env.track(f)
        assert f.sandbox_id != sbx.sandbox_id
        assert f.files.read("/tmp/state.txt") == "shared past"
    snap = sbx.create_snapshot()
    assert snap.snapshot_id in [s.snapshot_id for s in sbx.list_snapshots().next_items()]
    with pytest.raises(SandboxException, match="named snapshots are not supported"):
        sbx.create_snapshot(name="my-snapshot")
    try:
        born = e2b_env.track(Sandbox.create(template=snap.snapshot_id, timeout=120))
        assert born.files.read("/tmp/state.txt") == "shared past"
    finally:
        assert Sandbox.delete_snapshot(snap.snapshot_id) is True
    assert Sandbox.delete_snapshot(snap.snapshot_id) is False


@calls("Sandbox.create (network)", "Sandbox.update_network")
def test_network_options_become_our_egress_policy(e2b_env):
    def policy(sid: str) -> dict:
        resp = httpx.get(f"{e2b_env.server.api_url}/v1/namespaces/{e2b_env.a.name}/sandboxes/{sid}",
                         headers=auth(), timeout=30)
        return resp.json().get("network_policy") or {}

    sbx = e2b_env.track(Sandbox.create(timeout=120, network={"allow_out": ["10.1.0.0/16"], "deny_out": ["0.0.0.0/0"]}))
    assert policy(sbx.sandbox_id) == {"allow_internet_access": True, "allow_out": ["10.1.0.0/16"],
                                      "deny_out": ["0.0.0.0/0"]}, policy(sbx.sandbox_id)
    sbx.update_network({"deny_out": ["192.0.2.0/24"]})
    assert policy(sbx.sandbox_id)["deny_out"] == ["192.0.2.0/24"]
    assert sbx.commands.run("echo ok").stdout == "ok\n"
    with pytest.raises(SandboxException, match="not-an-address"):
        sbx.update_network({"deny_out": ["not-an-address!"]})
    assert policy(sbx.sandbox_id)["deny_out"] == ["192.0.2.0/24"]  # the old policy stays
    with pytest.raises(SandboxException, match="not supported by cellbox"):
        Sandbox.create(timeout=60, network={"mask_request_host": "example.org"})
    with pytest.raises(SandboxException, match="public ports"):
        Sandbox.create(timeout=60, network={"allow_public_traffic": True})


@calls("Template.exists")
def test_templates_are_our_images(e2b_env):
    assert e2b.Template.exists("base") is True
    assert e2b.Template.exists("cellbox/debian:latest") is True
    assert e2b.Template.exists("no/such-template") is False


@pytest.mark.e2b_unsupported("Sandbox.get_metrics", "Volume.create", "Template.build")
def test_calls_cellbox_does_not_serve_are_refused_clearly(e2b_env, sbx):
    with pytest.raises(SandboxException, match="does not serve"):
        sbx.get_metrics()
    with pytest.raises(Exception, match="does not serve"):
        e2b.Volume.create("vol")
    resp = httpx.post(f"{e2b_env.api_url}/v3/templates", json={"name": "x"}, headers={"X-API-KEY": e2b_env.a.key})
    assert resp.status_code == 501 and "does not serve" in resp.json()["message"]
    assert sbx.is_running()


@calls("AsyncSandbox.create", "AsyncSandbox commands.run", "AsyncSandbox files.watch_dir (stream)",
       "AsyncSandbox.kill")
def test_async_sdk(e2b_env):
    import asyncio

    from e2b import AsyncSandbox

    async def scenario() -> None:
        sbx = await AsyncSandbox.create(timeout=120)
        e2b_env.track(sbx)
        try:
            assert (await sbx.commands.run("echo async")).stdout == "async\n"
            await sbx.files.make_dir("/work/w")
            seen: list[tuple[str, str]] = []
            handle = await sbx.files.watch_dir("/work/w", on_event=lambda e: seen.append((e.name, e.type.value)))
            await sbx.files.write("/work/w/f.txt", "x")
            for _ in range(100):
                if ("f.txt", "create") in seen:
                    break
                await asyncio.sleep(0.05)
            await handle.stop()
            assert ("f.txt", "create") in seen, seen
        finally:
            assert await sbx.kill() is True

    asyncio.run(scenario())
