"""Isolation: sandboxes cannot reach each other or the host, nor escape their limits."""

from __future__ import annotations

import socket
import threading

import pytest

pytestmark = pytest.mark.root


@pytest.fixture
def host_listener():
    """A TCP server on all host addresses, the kind of service a sandbox must not reach."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", 0))
    srv.listen(8)
    accepted: list[str] = []
    stop = threading.Event()

    def serve() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, addr = srv.accept()
                accepted.append(addr[0])
                conn.close()
            except OSError:
                continue

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield srv.getsockname()[1], accepted
    stop.set()
    t.join(2)
    srv.close()


def _host_addresses() -> list[str]:
    import subprocess

    out = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True).stdout
    return [line.split()[3].split("/")[0] for line in out.splitlines()]


def _try_connect(sandboxes, rec, ip: str, port: int) -> str:
    script = (
        "import socket,sys\ns=socket.socket();s.settimeout(1.5)\n"
        f"try:\n s.connect(({ip!r},{port}));print('open')\nexcept Exception as e:\n print('blocked',type(e).__name__)"
    )
    return sandboxes.run(rec, "python3", "-c", script)["out"]


def test_sandbox_cannot_reach_another_sandbox(sandboxes):
    a = sandboxes.create()
    b = sandboxes.create()
    assert _try_connect(sandboxes, a, b.ip, 9501).startswith("blocked")
    ping = sandboxes.sh(a, f"ping -c1 -W1 {b.ip} >/dev/null 2>&1 && echo reached || echo blocked")
    assert ping["out"] in ("blocked", ""), ping
    # while the host itself reaches both agents
    with sandboxes.agent(b) as agent:
        assert agent.get("/api/v1/health").status_code == 200


def test_sandbox_cannot_reach_host_services(sandboxes, settings, host_listener):
    port, accepted = host_listener
    rec = sandboxes.create()
    for ip in {str(settings.gateway), *_host_addresses()}:
        assert _try_connect(sandboxes, rec, ip, port).startswith("blocked"), ip
    assert accepted == []


def test_sandbox_cannot_escape(sandboxes):
    rec = sandboxes.create()
    checks = {
        "sysrq": "echo b > /proc/sysrq-trigger",
        "mount": "mount -t tmpfs none /mnt",
        "module": "python3 -c \"import ctypes;l=ctypes.CDLL(None);r=l.syscall(175,0,0,0);"
                  "import sys;sys.exit(0 if r==0 else 1)\"",  # init_module(2) on x86_64
        "sysctl": "echo 1 > /proc/sys/kernel/panic",
        "raw disk": "head -c1 /dev/vda",
        "cgroup write": "echo 1 > /sys/fs/cgroup/pids/pids.max",
    }
    for what, cmd in checks.items():
        res = sandboxes.sh(rec, cmd + " 2>/dev/null")
        assert res["exit_code"] != 0, f"{what} succeeded inside the sandbox: {res}"


def test_sandbox_sees_only_its_own_processes(sandboxes):
    rec = sandboxes.create()
    res = sandboxes.sh(rec, "ls /proc | grep -E '^[0-9]+$' | wc -l; cat /proc/1/cmdline | tr '\\0' ' '")
    count, init = res["out"].splitlines()
    assert int(count) < 10, res["out"]
    assert "cellbox-agent" in init
    assert sandboxes.sh(rec, "cat /proc/self/status | grep CapEff")["out"].split()[1] != "000001ffffffffff"
