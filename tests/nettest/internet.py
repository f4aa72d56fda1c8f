"""A test "internet": one namespace with a router address, an HTTP server and DNS.

Layout::

    host ── veth tinet-h (198.51.100.1/24) ══ eth0 (198.51.100.2/24, +.3, +.4) [netns cbtest-inet]
                                                   ├── HTTP on :8080 on every address (answers its own address)
                                                   └── DNS on 198.51.100.2:53 (zone from a JSON file)

198.51.100.0/24 is TEST-NET-2, reserved for documentation: nothing real lives there.
Everything is removed by ``close()``, even after a failed test.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

NS = "cbtest-inet"
VETH = "tinet-h"
ROUTER = "198.51.100.1"
ADDRS = ["198.51.100.2", "198.51.100.3", "198.51.100.4"]
DNS = ADDRS[0]
HTTP_PORT = 8080

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
        for _ in range(100):
            r = subprocess.run(["ip", "netns", "exec", NS, "bash", "-c", f"exec 3<>/dev/tcp/{ADDRS[0]}/{HTTP_PORT}"],
                               capture_output=True)
            if r.returncode == 0:
                return
            time.sleep(0.05)
        raise RuntimeError("test HTTP server did not start")

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
