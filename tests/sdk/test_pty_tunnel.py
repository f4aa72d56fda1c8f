"""PTY sessions and TCP tunnels through the proxy, from the SDK."""

from __future__ import annotations

import time

import httpx
import pytest

from cellbox.sdk import WaitTimeout

pytestmark = pytest.mark.root


def test_pty_send_recv_exit_code(sbx):
    with sbx.pty("/bin/sh", rows=30, cols=100) as pty:
        pty.send("stty size; echo hi; exit 5\n")
        out = b""
        while chunk := pty.recv():
            out += chunk
        assert pty.exit_code == 5
        assert b"30 100" in out and b"hi" in out


def test_pty_resize(sbx):
    with sbx.pty("/bin/sh") as pty:
        pty.resize(rows=40, cols=132)
        time.sleep(0.2)
        pty.send("stty size; exit 0\n")
        out = b""
        while chunk := pty.recv():
            out += chunk
        assert b"40 132" in out and pty.exit_code == 0


def test_tunnel_to_http_server(sbx, tmp_path):
    sbx.write_file("/srv/www/index.html", "hello through the tunnel")
    server = sbx.start_process("python3", ["-m", "http.server", "8000", "--bind", "127.0.0.1"], working_dir="/srv/www")
    deadline = time.monotonic() + 20
    while sbx.run(["python3", "-c", "import socket; socket.create_connection(('127.0.0.1', 8000), 1)"]).exit_code != 0:
        assert time.monotonic() < deadline, "http.server did not start"
        time.sleep(0.2)
    try:
        with sbx.create_tunnel(8000) as tunnel:
            assert tunnel.local_port > 0
            for _ in range(3):  # one WebSocket per connection
                r = httpx.get(f"http://127.0.0.1:{tunnel.local_port}/index.html", timeout=20)
                assert r.status_code == 200 and r.text == "hello through the tunnel"
            assert tunnel.errors == []
    finally:
        server.kill()


def test_pty_wait_timeout_then_kill(sbx):
    with sbx.pty("/bin/sh", ["-c", "sleep 60"]) as pty:
        started = time.monotonic()
        with pytest.raises(WaitTimeout):
            pty.wait(timeout=1)
        assert time.monotonic() - started < 10
        pty.kill()
        pty.wait(timeout=30)  # the session ends: no hang, whatever the status
        assert pty.recv() == b""
