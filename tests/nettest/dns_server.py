"""A tiny authoritative DNS server for tests: answers A queries from a JSON file.

Run inside a test namespace: ``python3 dns_server.py ADDR ZONE.json``. The zone file
maps names to lists of IPv4 addresses and is re-read on every query, so a test can
change an answer while the server runs. Unknown names get NXDOMAIN.
"""

from __future__ import annotations

import json
import socket
import struct
import sys


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


def main() -> None:
    addr, zone_file = sys.argv[1], sys.argv[2]
    ttl = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((addr, 53))
    print("ready", flush=True)
    while True:
        data, peer = sock.recvfrom(4096)
        try:
            with open(zone_file) as f:
                zone = json.load(f)
            sock.sendto(answer(data, zone, ttl), peer)
        except Exception as exc:  # noqa: BLE001 - a test server must not die on one bad query
            print("bad query", exc, flush=True)


if __name__ == "__main__":
    main()
