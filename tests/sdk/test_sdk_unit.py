"""SDK checks that need no server: generated code is fresh, surfaces match, errors round-trip."""

from __future__ import annotations

import inspect
import struct
import subprocess
import sys
from pathlib import Path

import pytest

import cellbox
import cellbox.sdk as sdk
from cellbox.errors import CellboxError, InternalFailure, InvalidRequest, NotFound
from cellbox.sdk import _errors, _shared
from cellbox.sdk._async import AsyncProcess, AsyncPty, AsyncSandbox, AsyncSandboxClient, AsyncTunnel
from cellbox.sdk._sync import Process, Pty, Sandbox, SandboxClient, Tunnel

ROOT = Path(__file__).resolve().parents[2]


def test_generated_sync_sdk_is_up_to_date():
    script = ROOT / "scripts" / "unasync.py"
    proc = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(
    "async_cls, sync_cls",
    [
        (AsyncSandbox, Sandbox),
        (AsyncSandboxClient, SandboxClient),
        (AsyncProcess, Process),
        (AsyncPty, Pty),
        (AsyncTunnel, Tunnel),
    ],
)
def test_sync_and_async_surfaces_match(async_cls, sync_cls):
    """Same public methods, same parameters; async ones are coroutines (or async generators)."""

    def public(cls):
        return {n: m for n, m in inspect.getmembers(cls) if not n.startswith("_") and callable(m)}

    a, s = public(async_cls), public(sync_cls)
    assert a.keys() == s.keys()
    for name, method in a.items():
        assert list(inspect.signature(method).parameters) == list(inspect.signature(s[name]).parameters), name
        if inspect.iscoroutinefunction(method) or inspect.isasyncgenfunction(method):
            assert not inspect.iscoroutinefunction(s[name]) and not inspect.isasyncgenfunction(s[name]), name
    assert inspect.isasyncgenfunction(AsyncProcess.follow_output)
    assert inspect.isgeneratorfunction(Process.follow_output)


def test_public_names_are_pinned_and_lazily_reexported():
    assert sorted(sdk.__all__) == sorted(cellbox._SDK_EXPORTS)
    for name in sdk.__all__:
        assert getattr(cellbox, name) is getattr(sdk, name), name
    assert cellbox.SandboxError is CellboxError


def test_import_cellbox_and_cli_stay_light():
    code = (
        "import sys, cellbox, cellbox.cli.main, cellbox.errors; "
        "from cellbox import CellboxError; "
        "bad = [m for m in ('httpx', 'cellbox.sdk', 'rich') if m in sys.modules]; "
        "assert not bad, bad"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_every_sdk_error_has_a_distinct_code_that_round_trips():
    classes = set(_errors.CODE_TO_EXCEPTION.values())
    codes = [c.code for c in classes]
    assert len(codes) == len(set(codes))
    for cls in classes:
        assert issubclass(cls, CellboxError)
        err = _errors.error_from_response(cls.status, f'{{"error": "boom", "code": "{cls.code}"}}')
        assert type(err) is cls, (cls, type(err))
        assert (err.message, err.code, err.status) == ("boom", cls.code, cls.status)


@pytest.mark.parametrize(
    "status, body, expected, code",
    [
        (404, '{"error":"no such file","code":"NOT_FOUND"}', NotFound, "NOT_FOUND"),
        (404, '{"error":"x","code":"PROCESS_NOT_FOUND"}', NotFound, "PROCESS_NOT_FOUND"),
        (403, '{"error":"x","code":"PATH_TRAVERSAL"}', _errors.PermissionDenied, "PATH_TRAVERSAL"),
        (400, '{"error":"x","code":"COMMAND_NOT_FOUND"}', InvalidRequest, "COMMAND_NOT_FOUND"),
        (503, '{"error":"x","code":"SANDBOX_NOT_RUNNING"}', _errors.SandboxUnavailable, "SANDBOX_NOT_RUNNING"),
        (502, "bad gateway", _errors.SandboxUnavailable, "SANDBOX_UNAVAILABLE"),
        (500, "", InternalFailure, "INTERNAL"),
        (409, '{"error": "name taken"}', sdk.Conflict, "CONFLICT"),
        (429, '{"error":"x","code":"TOO_MANY_SESSIONS"}', sdk.LimitExceeded, "TOO_MANY_SESSIONS"),
    ],
)
def test_status_and_code_table(status, body, expected, code):
    err = _errors.error_from_response(status, body)
    assert type(err) is expected and err.code == code and err.status == status


def test_sandbox_routes_refine_plain_404():
    err = _errors.error_from_response(404, '{"error":"gone","code":"NOT_FOUND"}', not_found=sdk.SandboxNotFoundError)
    assert isinstance(err, sdk.SandboxNotFoundError) and isinstance(err, NotFound)


def test_proxy_target_rules():
    local = _shared.proxy_target("abc", "http://localhost:9443")
    assert local.base_url == "http://localhost:9443" and local.headers == {"Host": "abc.local"}
    assert local.address() == ("localhost", 9443, False)
    remote = _shared.proxy_target("abc", "https://proxy.example.com/x", "hint")
    assert remote.headers == {"X-Tensorlake-Sandbox-Id": "abc", "X-Tensorlake-Route-Hint": "hint"}
    assert remote.address() == ("proxy.example.com", 443, True)


def test_sse_decoder_and_run_folder():
    text = (
        ": ping\n\n"
        'data: {"handle":1,"pid":42,"started_at":1}\n\n'
        'event: output\ndata: {"line":"a","stream":"stdout"}\n\n'
        'data: {"line":"e","stream":"stderr"}\n\n'
        'data: {"type":"heartbeat"}\n\n'
        'data: {"line":"b","stream":"stdout"}\n\n'
        'data: {"exit_code":-9,"signal":9,"reason":"timed_out"}\n\n'
    )
    dec, folder = _shared.SSEDecoder(), _shared.RunFolder()
    for line in text.split("\n"):
        if (ev := dec.feed(line)) is not None:
            folder.feed(ev[1])
    res = folder.result()
    assert res == sdk.CommandResult(exit_code=-9, stdout="a\nb", stderr="e", signal=9, timed_out=True, pid=42)
    dec = _shared.SSEDecoder()
    assert dec.feed("event: eof") is None and dec.feed("data: {}") is None and dec.feed("") == ("eof", {})


def test_signal_only_final_event_gives_negative_exit_code():
    folder = _shared.RunFolder()
    folder.feed({"signal": 15, "reason": "signaled"})
    res = folder.result()
    assert res is not None and (res.exit_code, res.signal, res.timed_out) == (-15, 15, False)


def test_pty_frames():
    assert _shared.pty_resize(rows=30, cols=100) == b"\x01" + struct.pack(">HH", 100, 30)
    assert _shared.pty_decode(b"\x03" + struct.pack(">i", 5)) == (_shared.PTY_EXIT, 5)
    assert _shared.pty_decode(b"\x00hi") == (_shared.PTY_DATA, b"hi")
    assert _shared.exit_code_from_close_reason("exit:7") == 7


def test_create_body_omits_defaults():
    body = _shared.create_body(
        image=None, cpus=2, memory_mb=4096, disk_mb=None, timeout_secs=None, name="web", entrypoint=None,
        exposed_ports=[8080, 80, 8080], allow_unauthenticated_access=None, allow_internet_access=True,
        allow_out=None, deny_out=None, snapshot_id=None, wait=True,
    )
    assert body == {"resources": {"cpus": 2.0, "memory_mb": 4096}, "name": "web", "exposed_ports": [80, 8080]}
    with pytest.raises(InvalidRequest):
        _shared.normalize_ports([9501])


def test_command_argv_forms():
    assert _shared.command_argv("ls", ["-l"]) == ("ls", ["-l"])
    assert _shared.command_argv(["sh", "-c", "x"], None) == ("sh", ["-c", "x"])
