"""A tiny authoritative DNS server for tests: answers A queries from a JSON file, over UDP and TCP.

Run inside a test namespace: ``python3 dns_server.py ADDR ZONE.json``. The zone file
maps names to lists of IPv4 addresses and is re-read on every query, so a test can
change an answer while the server runs. Unknown names get NXDOMAIN.
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import threading


def parse_name(msg: bytes, off: int) -> tuple[str, int]:
    labels = []
    while msg[off]:
        n = msg[off]
        labels.append(msg[off + 1 : off + 1 + n].decode())
        off += n + 1
    return ".".join(labels).lower(), off + 1


def answer(query: bytes, zone: dict[str, list[str]], ttl: int) -> bytes:
    qid, flags = struct.unpack("!HH", query[:4])
    name, end = parse_name(query, 12)
    qtype, _ = struct.unpack("!HH", query[end : end + 4])
    question = query[12 : end + 4]
    addrs = zone.get(name)
    rcode = 0 if addrs is not None else 3
    answers = b""
    if addrs and qtype == 1:
        for a in addrs:
            answers += b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, ttl, 4) + socket.inet_aton(a)
    count = len(addrs) if (addrs and qtype == 1) else 0
    header = struct.pack("!HHHHHH", qid, 0x8180 | rcode, 1, count, 0, 0)
    return header + question + answers


def load(zone_file: str) -> dict[str, list[str]]:
    with open(zone_file) as f:
        return json.load(f)


def serve_tcp(addr: str, zone_file: str, ttl: int) -> None:
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((addr, 53))
    srv.listen(16)
    while True:
        conn, _ = srv.accept()
        with conn:
            try:
                head = conn.recv(2, socket.MSG_WAITALL)
                query = conn.recv(struct.unpack("!H", head)[0], socket.MSG_WAITALL)
                reply = answer(query, load(zone_file), ttl)
                conn.sendall(struct.pack("!H", len(reply)) + reply)
            except Exception as exc:  # noqa: BLE001 - a test server must not die on one bad query
                print("bad tcp query", exc, flush=True)


def main() -> None:
    addr, zone_file = sys.argv[1], sys.argv[2]
    ttl = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((addr, 53))
    threading.Thread(target=serve_tcp, args=(addr, zone_file, ttl), daemon=True).start()
    print("ready", flush=True)
    while True:
        data, peer = sock.recvfrom(4096)
        try:
            sock.sendto(answer(data, load(zone_file), ttl), peer)
        except Exception as exc:  # noqa: BLE001 - a test server must not die on one bad query
            print("bad query", exc, flush=True)


if __name__ == "__main__":
    main()
