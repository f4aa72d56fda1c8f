"""Reachability probes run *inside* a sandbox: ``python3 probe.py '<json checks>'``.

Each check is ``[kind, target]`` with kind ``tcp`` (``addr:port``: connect and echo),
``udp`` (``addr:port``: a datagram to the echo server and its reply), ``icmp``
(``addr``: one echo request on a raw socket), ``dns`` (a name, through the
sandbox's resolver) or ``dns@`` (``server/name``: one A query sent straight to that
server, over UDP; ``dnstcp@`` the same over TCP). Prints one JSON object mapping each check to ``"ok"``/``"ok:<answer>"`` or
``"blocked:<error>"``. Only the standard library: it runs in the default image's
Python. The source is sent with the command (``python3 -c``), not copied in.
"""

import json
import os
import socket
import struct
import sys
import time

TIMEOUT = 2.0


def tcp(target):
    host, port = target.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=TIMEOUT) as s:
        s.sendall(b"ping")
        return "ok" if s.recv(16) == b"ping" else "blocked:bad echo"


def udp(target):
    host, port = target.rsplit(":", 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(TIMEOUT)
        s.connect((host, int(port)))
        s.send(b"ping")
        return "ok" if s.recv(16) == b"ping" else "blocked:bad echo"


def _checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def icmp(target):
    """An echo request and its reply. Sandboxes lack CAP_NET_RAW, so this is an ICMP
    datagram ("ping") socket, as ping itself uses then (net.ipv4.ping_group_range): the
    kernel sets the identifier and hands back the ICMP message without its IP header.
    Where that socket is not allowed (a plain netns, whose range is empty), a raw one."""
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
    except PermissionError:
        return _icmp_raw(target)
    header = struct.pack("!BBHHH", 8, 0, 0, 0, 1)
    packet = struct.pack("!BBHHH", 8, 0, _checksum(header + b"probe"), 0, 1) + b"probe"
    with s:
        s.settimeout(0.5)
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:  # a request every 0.5 s: the first may wait on ARP
            try:
                s.sendto(packet, (target, 0))
                data, addr = s.recvfrom(1024)
            except socket.timeout:
                continue
            except OSError:  # an ICMP error (rejected on the way) arrives as a socket error
                return "blocked:unreachable"
            if addr[0] == target and data[0] == 0:
                return "ok"
            if data[0] == 3:
                return "blocked:unreachable"
        return "blocked:timeout"


def _icmp_raw(target):
    ident = os.getpid() & 0xFFFF
    header = struct.pack("!BBHHH", 8, 0, 0, ident, 1)
    packet = struct.pack("!BBHHH", 8, 0, _checksum(header + b"probe"), ident, 1) + b"probe"
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as s:
        s.settimeout(0.5)
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:  # a request every 0.5 s: the first may wait on ARP
            s.sendto(packet, (target, 0))
            try:
                data, addr = s.recvfrom(1024)
            except socket.timeout:
                continue
            typ, _, _, rid, _ = struct.unpack("!BBHHH", data[20:28])
            if addr[0] == target and typ == 0 and rid == ident:
                return "ok"
            if typ == 3:  # destination unreachable: rejected on the way
                return "blocked:unreachable"
        return "blocked:timeout"


def dns(name):
    return "ok:" + socket.gethostbyname(name)


def _query(name):
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!HH", 1, 1)


def _first_a(data):
    count = struct.unpack("!H", data[6:8])[0]
    return "ok:" + (socket.inet_ntoa(data[-4:]) if count else "nxdomain")


def dns_direct(target):
    server, name = target.split("/", 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(TIMEOUT)
        s.sendto(_query(name), (server, 53))
        return _first_a(s.recv(4096))


def dns_tcp(target):
    server, name = target.split("/", 1)
    query = _query(name)
    with socket.create_connection((server, 53), timeout=TIMEOUT) as s:
        s.sendall(struct.pack("!H", len(query)) + query)
        buf = b""
        while len(buf) < 2 or len(buf) < 2 + struct.unpack("!H", buf[:2])[0]:
            chunk = s.recv(4096)
            if not chunk:
                raise ConnectionError("short answer")
            buf += chunk
        return _first_a(buf[2:])


KINDS = {"tcp": tcp, "udp": udp, "icmp": icmp, "dns": dns, "dns@": dns_direct, "dnstcp@": dns_tcp}


def main():
    results = {}
    for kind, target in json.loads(sys.argv[1]):
        try:
            results[f"{kind} {target}"] = KINDS[kind](target)
        except Exception as exc:  # noqa: BLE001 - every failure is an outcome to report
            results[f"{kind} {target}"] = f"blocked:{type(exc).__name__}"
    print(json.dumps(results))


if __name__ == "__main__":
    main()
