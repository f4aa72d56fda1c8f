"""A test "internet": one namespace with a router address, an HTTP server and DNS.

Layout::

    host ── veth tinet-h (198.51.100.1/24) ══ eth0 (198.51.100.2/24, +.3, +.4) [netns cbtest-inet]
                                                   ├── HTTP on :8080 on every address (answers its own address)
                                                   ├── TCP and UDP echo on :9000 on every address
                                                   └── DNS on 198.51.100.2:53 (zone from a JSON file)

198.51.100.0/24 is TEST-NET-2, reserved for documentation: nothing real lives there.
Everything is removed by ``close()``, even after a failed test.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

NS = "cbtest-inet"
VETH = "tinet-h"
ROUTER = "198.51.100.1"
ADDRS = ["198.51.100.2", "198.51.100.3", "198.51.100.4"]
DNS = ADDRS[0]
HTTP_PORT = 8080
ECHO_PORT = 9000

HTTP_SERVER = """
import http.server, socketserver, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = self.connection.getsockname()[0].encode()
        self.send_response(200); self.send_header('Content-Length', str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer(('0.0.0.0', int(sys.argv[1])), H).serve_forever()
"""

ECHO_SERVER = """
import socket, socketserver, sys, threading
port = int(sys.argv[1])
class T(socketserver.BaseRequestHandler):
    def handle(self):
        while data := self.request.recv(65536):
            self.request.sendall(data)
class U(socketserver.BaseRequestHandler):
    def handle(self):
        data, sock = self.request
        sock.sendto(data, self.client_address)
socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer.daemon_threads = True
socketserver.ThreadingTCPServer.request_queue_size = 256
# One UDP socket per address: a reply must leave from the address the request went to.
for addr in sys.argv[2:]:
    threading.Thread(target=socketserver.ThreadingUDPServer((addr, port), U).serve_forever, daemon=True).start()
socketserver.ThreadingTCPServer(('0.0.0.0', port), T).serve_forever()
"""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


class Internet:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.zone_file = workdir / "zone.json"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.set_zone({})
        self.close()  # remove leftovers of an interrupted earlier run
        try:
            _ip("netns", "add", NS)
            _ip("link", "add", VETH, "type", "veth", "peer", "name", "eth0", "netns", NS)
            _ip("addr", "add", f"{ROUTER}/24", "dev", VETH)
            _ip("link", "set", VETH, "up")
            for a in ADDRS:
                _ip("-n", NS, "addr", "add", f"{a}/24", "dev", "eth0")
            _ip("-n", NS, "link", "set", "eth0", "up")
            _ip("-n", NS, "link", "set", "lo", "up")
            _ip("-n", NS, "route", "add", "default", "via", ROUTER)
            self._spawn([sys.executable, "-c", HTTP_SERVER, str(HTTP_PORT)])
            self._spawn([sys.executable, "-c", ECHO_SERVER, str(ECHO_PORT), *ADDRS])
            dns = self._spawn([sys.executable, str(Path(__file__).with_name("dns_server.py")), DNS, str(self.zone_file)],
                              stdout=subprocess.PIPE)
            assert dns.stdout and dns.stdout.readline().strip() == b"ready"
            self._wait_http()
        except BaseException:
            self.close()
            raise

    def _spawn(self, argv: list[str], **kw: object) -> subprocess.Popen[bytes]:
        p = subprocess.Popen(["ip", "netns", "exec", NS, *argv], **kw)  # type: ignore[call-overload]
        self.procs.append(p)
        return p

    def _wait_http(self) -> None:
        for port in (HTTP_PORT, ECHO_PORT):
            for _ in range(100):
                r = subprocess.run(["ip", "netns", "exec", NS, "bash", "-c", f"exec 3<>/dev/tcp/{ADDRS[0]}/{port}"],
                                   capture_output=True)
                if r.returncode == 0:
                    break
                time.sleep(0.05)
            else:
                raise RuntimeError(f"test server on port {port} did not start")

    def set_zone(self, zone: dict[str, list[str]]) -> None:
        tmp = self.zone_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(zone))
        tmp.replace(self.zone_file)

    def close(self) -> None:
        for p in self.procs:  # only processes we started, by their PID
            p.kill()
            p.wait(5)
        self.procs.clear()
        subprocess.run(["ip", "link", "del", VETH], capture_output=True)
        subprocess.run(["ip", "netns", "del", NS], capture_output=True)


@contextmanager
def resolver_upstream(data_dir: Path, server: str = DNS) -> Iterator[None]:
    """Point the sandboxes' resolver of every cellbox process on this host at ``server``.

    The forwarders read this override file (``network/dns.py``); a test against a server
    subprocess cannot reach its manager object, so it writes the file itself.
    """
    path = data_dir / "dns-upstreams"
    path.write_text(server + "\n")
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def probe_source() -> str:
    return Path(__file__).with_name("probe.py").read_text()


def tcp_checks(*addrs: str) -> str:
    """Probe arguments: a TCP echo check of each address."""
    return json.dumps([("tcp", f"{a}:{ECHO_PORT}") for a in addrs])


def tcp_verdicts(probe_stdout: str) -> dict[str, str]:
    """``{address: "ok" | "blocked"}`` from the output of a :func:`tcp_checks` probe."""
    return {k.split()[1].split(":")[0]: v.split(":")[0] for k, v in json.loads(probe_stdout).items()}
