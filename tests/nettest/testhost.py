"""A test host in a namespace of its own, on addresses the test chooses.

Unlike the fake internet (``internet.py``, fixed TEST-NET-2 addresses) this one lives
wherever a test needs it: on private ranges (to check the default deny of those), or on
a documentation range to receive forged packets. It runs a TCP echo server on
``ECHO_PORT`` and a UDP recorder on ``RECORD_PORT`` that logs every datagram's payload,
so the test judges from the host what reached it.

    host ── veth twn-<tag> (host addresses) ══ eth0 (peer addresses) [netns cbtest-wn-<tag>]

Everything is removed by ``close()``, even after a failed test.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ECHO_PORT = 9000
RECORD_PORT = 9999

SERVER = r"""
import socket, socketserver, sys, threading
log = open(sys.argv[1], "ab", buffering=0)
class T(socketserver.BaseRequestHandler):
    def handle(self):
        while data := self.request.recv(65536):
            self.request.sendall(data)
def record():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", int(sys.argv[3])))
    while True:
        data, peer = s.recvfrom(65536)
        log.write(data.replace(b"\n", b" ") + b"\n")
threading.Thread(target=record, daemon=True).start()
socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer.daemon_threads = True
socketserver.ThreadingTCPServer(("0.0.0.0", int(sys.argv[2])), T).serve_forever()
"""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


class TestHost:
    """``nets``: ``(host_cidr, peer_address)`` pairs, e.g. ``("192.168.77.1/29", "192.168.77.2")``."""

    __test__ = False  # not a pytest class

    def __init__(self, tag: str, nets: list[tuple[str, str]], workdir: Path) -> None:
        self.ns, self.veth = f"cbtest-wn-{tag}", f"twn-{tag}"
        self.nets = nets
        self.log = workdir / f"{tag}-received.log"
        self.log.write_bytes(b"")
        self.proc: subprocess.Popen[bytes] | None = None
        self.close()  # leftovers of an interrupted earlier run
        try:
            _ip("netns", "add", self.ns)
            _ip("link", "add", self.veth, "type", "veth", "peer", "name", "eth0", "netns", self.ns)
            for host_cidr, peer in nets:
                prefix = host_cidr.split("/")[1]
                _ip("addr", "add", host_cidr, "dev", self.veth)
                _ip("-n", self.ns, "addr", "add", f"{peer}/{prefix}", "dev", "eth0")
            _ip("link", "set", self.veth, "up")
            _ip("-n", self.ns, "link", "set", "eth0", "up")
            _ip("-n", self.ns, "link", "set", "lo", "up")
            self.proc = subprocess.Popen(["ip", "netns", "exec", self.ns, sys.executable, "-c", SERVER,
                                          str(self.log), str(ECHO_PORT), str(RECORD_PORT)])
            self._wait()
        except BaseException:
            self.close()
            raise

    @property
    def addresses(self) -> list[str]:
        return [peer for _, peer in self.nets]

    def _wait(self) -> None:
        for _ in range(100):
            r = subprocess.run(["ip", "netns", "exec", self.ns, "bash", "-c",
                                f"exec 3<>/dev/tcp/{self.addresses[0]}/{ECHO_PORT}"], capture_output=True)
            if r.returncode == 0:
                return
            time.sleep(0.05)
        raise RuntimeError("test host server did not start")

    def received(self) -> list[bytes]:
        """Payloads of the datagrams that reached the recorder so far."""
        return self.log.read_bytes().splitlines()

    def close(self) -> None:
        if self.proc is not None:  # only the process we started, by its PID
            self.proc.kill()
            self.proc.wait(5)
            self.proc = None
        subprocess.run(["ip", "link", "del", self.veth], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)
