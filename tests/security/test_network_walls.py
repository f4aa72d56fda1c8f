"""Network walls (walls issue, holes 3, 4 and the network part of 7): a tenant with full
control of its netns attacks the bridge, the host's tables and its neighbours.

The attacker is simulated by host root entering the sandbox's netns
(``ip netns exec cb-<id> …``): it can add addresses, change its MAC, send any frame on a
raw socket, i.e. more than a sandbox's root keeps once ``CAP_NET_RAW`` is dropped. Every
verdict is taken from the host: what a test host (a namespace this test makes, see
``tests/nettest/testhost.py``) received, what the host's neighbour and FDB tables hold,
which agent answers, how many file descriptors and conntrack entries exist.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cellbox import ids
from cellbox.network.netns import mac_for
from cellbox.network.policy import parse

from ..nettest.internet import resolver_upstream
from ..nettest.testhost import ECHO_PORT, RECORD_PORT, TestHost

pytestmark = pytest.mark.root

# A documentation range (not denied by default), apart from the fake internet's.
PUBLIC = ("203.0.113.217/29", "203.0.113.218")
PRIVATE = [("192.168.77.1/29", "192.168.77.2"), ("172.16.77.1/29", "172.16.77.2"), ("100.64.77.1/29", "100.64.77.2")]


@pytest.fixture
def public_host(tmp_path: Path) -> Iterator[TestHost]:
    host = TestHost("pub", [PUBLIC], tmp_path)
    try:
        yield host
    finally:
        host.close()


@pytest.fixture
def private_host(tmp_path: Path) -> Iterator[TestHost]:
    host = TestHost("priv", PRIVATE, tmp_path)
    try:
        yield host
    finally:
        host.close()


@pytest.fixture
def upstream_dns(tmp_path: Path, settings) -> Iterator[TestHost]:
    """A DNS server of this test's own (tests/nettest/dns_server.py in a test host) that
    answers ``svc.walls.example``, with every cellbox resolver on the host pointed at it."""
    host = TestHost("dns", [PUBLIC], tmp_path)
    zone = tmp_path / "zone.json"
    zone.write_text(json.dumps({"svc.walls.example": ["198.51.100.3"]}))
    server = subprocess.Popen(["ip", "netns", "exec", host.ns, sys.executable,
                               str(Path(__file__).parent.parent / "nettest" / "dns_server.py"),
                               host.addresses[0], str(zone)], stdout=subprocess.PIPE)
    try:
        assert server.stdout and server.stdout.readline().strip() == b"ready"
        with resolver_upstream(settings.data_dir, host.addresses[0]):
            yield host
    finally:
        server.kill()
        server.wait(5)
        host.close()


def in_netns(rec, code: str, *args: str, timeout: float = 60) -> str:
    """Run ``code`` with the host's Python as root inside the sandbox's netns (the tenant
    with full control of its network); return what it printed."""
    r = subprocess.run(["ip", "netns", "exec", ids.netns(rec.id), sys.executable, "-c", code, *args],
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr
    return r.stdout


def mac_of(rec) -> str:
    return mac_for(ipaddress.IPv4Address(rec.ip))


def host_neigh(ip: str, dev: str) -> str:
    return subprocess.run(["ip", "neigh", "show", ip, "dev", dev], capture_output=True, text=True).stdout


def port_fdb(rec) -> list[str]:
    """MACs the bridge FDB maps to the sandbox's port (not the port's own address)."""
    out = subprocess.run(["bridge", "fdb", "show", "dev", ids.host_veth(rec.id)],
                         capture_output=True, text=True).stdout
    # Learned and static entries of the bridge; "permanent" ones are the port's own
    # address and the veth's multicast filter, not the bridge's forwarding state.
    return [line.split()[0] for line in out.splitlines() if " master " in line and "permanent" not in line]


def host_can_reach(addr: str) -> bool:
    with socket.create_connection((addr, ECHO_PORT), timeout=3) as s:
        s.sendall(b"x")
        return s.recv(1) == b"x"


RAW = r"""
import socket, struct, sys, os, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
BCAST = b"\xff" * 6
def mac(text): return bytes.fromhex(text.replace(":", ""))
def arp(op, sha, spa, tha, tpa, dst=BCAST):
    return (dst + sha + b"\x08\x06" + struct.pack("!HHBBH", 1, 0x0800, 6, 4, op)
            + sha + socket.inet_aton(spa) + tha + socket.inet_aton(tpa))
"""


def udp_send(rec, src: str, dst: str, payload: str) -> None:
    """From the sandbox's netns: add ``src`` to its eth0 and send datagrams from it."""
    in_netns(rec, """
import socket, subprocess, sys, time
src, dst, port, payload = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4].encode()
subprocess.run(["ip", "addr", "add", src + "/32", "dev", "eth0"], capture_output=True)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((src, 0))
for _ in range(5):
    try:
        s.sendto(payload, (dst, port))
    except OSError:
        pass
    time.sleep(0.1)
""", src, dst, str(RECORD_PORT), payload)


# -- source pinning -------------------------------------------------------------------


def test_forged_source_ip_cannot_borrow_another_sandboxs_policy(sandboxes, public_host):
    """The attacker has no internet; forging the unrestricted victim's address (or any
    other) must not get its packets out."""
    victim = sandboxes.create()
    attacker = sandboxes.create(network=parse(allow_internet_access=False))
    dst = public_host.addresses[0]
    udp_send(attacker, attacker.ip, dst, "own-address")  # its own policy: blocked
    udp_send(attacker, victim.ip, dst, "forged-victim")
    udp_send(attacker, "203.0.113.99", dst, "forged-outsider")
    udp_send(victim, victim.ip, dst, "victim-itself")  # the path works for the real owner
    time.sleep(0.5)
    got = set(public_host.received())
    assert b"victim-itself" in got
    assert got.isdisjoint({b"own-address", b"forged-victim", b"forged-outsider"}), got


def test_forged_source_mac_is_dropped_and_never_learned(sandboxes, public_host):
    rec = sandboxes.create()
    in_netns(rec, """
import subprocess
subprocess.run(["ip", "link", "set", "eth0", "address", "02:00:00:66:66:66"], check=True)
""")
    udp_send(rec, rec.ip, public_host.addresses[0], "forged-mac")
    time.sleep(0.5)
    assert b"forged-mac" not in public_host.received()
    assert "02:00:00:66:66:66" not in port_fdb(rec)


def test_arp_claim_of_another_sandboxs_address_does_not_take_its_traffic(sandboxes, settings):
    victim, attacker = sandboxes.create(), sandboxes.create()
    v_mac, a_mac = mac_of(victim), mac_of(attacker)
    gw_mac = mac_for(settings.gateway)
    # The attacker takes the victim's address: if the host's frames for it came here,
    # the attacker's own agent (listening on every address) would answer in its place.
    in_netns(attacker, """
import subprocess, sys
subprocess.run(["ip", "addr", "add", sys.argv[1] + "/32", "dev", "eth0"], check=True)
""", victim.ip)
    in_netns(attacker, RAW + """
a, v, gw, gwmac = mac(sys.argv[1]), sys.argv[2], sys.argv[3], mac(sys.argv[4])
for _ in range(25):
    s.send(arp(2, a, v, BCAST, v))
    s.send(arp(2, a, v, gwmac, gw, dst=gwmac))
    s.send(arp(1, a, v, b"\\0" * 6, gw))
    time.sleep(0.1)
""", a_mac, victim.ip, str(settings.gateway), gw_mac)
    neigh = host_neigh(victim.ip, settings.bridge)
    assert a_mac not in neigh and (v_mac in neigh or not neigh.strip()), neigh
    # The host's connections to the victim's agent reach the victim, not the attacker.
    res = sandboxes.run(victim, "hostname", timeout=20)
    assert res["out"].strip() == victim.id


def test_mac_and_neighbour_floods_do_not_grow_the_hosts_tables(sandboxes, settings):
    rec = sandboxes.create()
    gw = str(settings.gateway)
    # 1,000 frames from random source MACs, and 300 ARP requests to the gateway from
    # addresses that belong to nobody (each would make the host a neighbour entry).
    flood_net = ipaddress.IPv4Network("10.210.251.0/24")
    in_netns(rec, RAW + """
gw, base = sys.argv[1], sys.argv[2]
for i in range(1000):
    src = b"\\x02" + os.urandom(5)
    s.send(BCAST + src + b"\\x08\\x00" + os.urandom(46))
a, b, c, _ = base.split(".")
for i in range(1, 255):
    src = b"\\x02" + os.urandom(5)
    s.send(arp(1, src, f"{a}.{b}.{c}.{i}", b"\\0" * 6, gw))
""", gw, str(flood_net.network_address))
    time.sleep(0.5)
    neigh = subprocess.run(["ip", "neigh", "show", "dev", settings.bridge], capture_output=True, text=True).stdout
    flooded = [line for line in neigh.splitlines() if ipaddress.IPv4Address(line.split()[0]) in flood_net]
    # Both verdicts at once: each table is its own wall.
    assert (len(port_fdb(rec)), len(flooded)) == (1, 0), (port_fdb(rec)[:5], flooded[:5])
    assert port_fdb(rec) == [mac_of(rec)]
    # The sandbox's own entry is pinned.
    assert "PERMANENT" in host_neigh(rec.ip, settings.bridge)


# -- private ranges -------------------------------------------------------------------

PROBE_TCP = """
import json, socket, sys
out = {}
for addr in sys.argv[1:]:
    try:
        with socket.create_connection((addr, %d), timeout=3) as s:
            s.sendall(b"x"); out[addr] = "ok" if s.recv(1) == b"x" else "bad"
    except OSError as exc:
        out[addr] = "blocked"
print(json.dumps(out))
""" % ECHO_PORT


def probe_tcp(sandboxes, rec, *addrs: str) -> dict[str, str]:
    res = sandboxes.run(rec, "python3", "-c", PROBE_TCP, *addrs, timeout=60)
    assert res["exit_code"] == 0, res
    return json.loads(res["out"].strip().splitlines()[-1])


def test_private_ranges_are_denied_by_default_and_opened_by_allow_out(sandboxes, private_host):
    addrs = private_host.addresses
    assert all(host_can_reach(a) for a in addrs)  # the test hosts are up, seen from the host
    default = sandboxes.create()
    assert probe_tcp(sandboxes, default, *addrs) == {a: "blocked" for a in addrs}
    opened = sandboxes.create(network=parse(allow_out=["192.168.77.0/29", "100.64.77.2"]))
    assert probe_tcp(sandboxes, opened, *addrs) == {
        "192.168.77.2": "ok", "100.64.77.2": "ok", "172.16.77.2": "blocked"}


def test_host_services_and_metadata_are_unreachable(sandboxes, settings):
    rec = sandboxes.create()
    host_addrs = [a for a in subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split()
                  if ":" not in a]
    targets = [(str(settings.gateway), p) for p in (8900, 9443, 22)] + [(a, 8900) for a in host_addrs] \
        + [("169.254.169.254", 80)]
    code = """
import json, socket, sys
out = {}
for t in json.loads(sys.argv[1]):
    try:
        socket.create_connection(tuple(t), timeout=2).close(); out[f"{t[0]}:{t[1]}"] = "open"
    except OSError:
        out[f"{t[0]}:{t[1]}"] = "blocked"
print(json.dumps(out))
"""
    got = json.loads(sandboxes.run(rec, "python3", "-c", code, json.dumps(targets))["out"].strip().splitlines()[-1])
    assert set(got.values()) == {"blocked"}, got


# -- neighbours -----------------------------------------------------------------------


def test_sandboxes_cannot_reach_each_other_by_unicast_broadcast_or_ipv6(sandboxes):
    victim, attacker = sandboxes.create(), sandboxes.create()
    listener = subprocess.Popen(["ip", "netns", "exec", ids.netns(victim.id), sys.executable, "-c", """
import select, socket
s4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s4.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
s4.bind(("0.0.0.0", 7777))
s6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1); s6.bind(("::", 7777))
print("ready", flush=True)
while True:
    for s in select.select([s4, s6], [], [])[0]:
        print(s.recv(100).decode(), flush=True)
"""], stdout=subprocess.PIPE, text=True)
    try:
        assert listener.stdout and listener.stdout.readline().strip() == "ready"
        in_netns(attacker, RAW + """
import subprocess
v, vmac = sys.argv[1], mac(sys.argv[2])
subprocess.run(["sysctl", "-qw", "net.ipv6.conf.eth0.disable_ipv6=0"], capture_output=True)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
for dst in (v, "10.210.255.255", "255.255.255.255"):
    try: u.sendto(b"hit-" + dst.encode(), (dst, 7777))
    except OSError: pass
u6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
for dst in ("ff02::1", "fe80::" + sys.argv[2].replace(":", "")[-4:]):
    try: u6.sendto(b"hit-v6", (dst, 7777, 0, socket.if_nametoindex("eth0")))
    except OSError: pass
# A hand-made frame straight to the victim's MAC, IPv4/UDP to port 7777.
def csum(b):
    if len(b) % 2: b += b"\\0"
    t = sum(struct.unpack(f"!{len(b)//2}H", b)); t = (t >> 16) + (t & 0xffff); return ~(t + (t >> 16)) & 0xffff
data = b"hit-raw"
udp = struct.pack("!HHHH", 4444, 7777, 8 + len(data), 0) + data
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0, socket.inet_aton(sys.argv[3]), socket.inet_aton(v))
ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
for _ in range(3):
    s.send(vmac + mac(sys.argv[4]) + b"\\x08\\x00" + ip + udp)
""", victim.ip, mac_of(victim), attacker.ip, mac_of(attacker))
        time.sleep(1)
    finally:
        listener.kill()
        out, _ = listener.communicate(timeout=5)
    assert "hit" not in out, out


# -- bounded resources ----------------------------------------------------------------


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_resolver_connection_flood_is_bounded_and_others_still_resolve(sandboxes, settings, upstream_dns):
    flooder, other = sandboxes.create(), sandboxes.create()
    before = _fds()
    flood = subprocess.Popen(["ip", "netns", "exec", ids.netns(flooder.id), sys.executable, "-c", """
import resource, socket, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))
held = []
for _ in range(1500):
    s = socket.socket(); s.settimeout(1)
    try:
        s.connect((sys.argv[1], 53)); held.append(s)
    except OSError:
        s.close()
print(len(held), flush=True)
sys.stdin.read()
""", str(settings.gateway)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert flood.stdout is not None
        flood.stdout.readline()
        time.sleep(0.5)  # our forwarder accepts what the kernel queued
        grown = _fds() - before
        res = sandboxes.run(other, "getent", "hosts", "svc.walls.example", timeout=30)
    finally:
        flood.stdin.close()  # type: ignore[union-attr]
        flood.wait(30)
    assert grown <= 2 * settings.dns_tcp_per_sandbox + 16, grown
    assert "198.51.100.3" in res["out"], res


def _conntrack_from(ip: str) -> int:
    needle = f"src={ip} "
    with open("/proc/net/nf_conntrack") as f:
        return sum(1 for line in f if needle in line.split("dst=")[0] + " ")


def test_conntrack_entries_per_sandbox_are_bounded(sandboxes, settings, public_host):
    rec = sandboxes.create()
    n = settings.conntrack_per_sandbox + 1000
    in_netns(rec, """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for port in range(20000, 20000 + int(sys.argv[2])):
    try: s.sendto(b"x", (sys.argv[1], port))
    except OSError: pass
""", public_host.addresses[0], str(n))
    time.sleep(0.5)
    assert _conntrack_from(rec.ip) <= settings.conntrack_per_sandbox + 64


def test_fuzzed_dns_never_breaks_the_resolver(sandboxes, settings, upstream_dns):
    # A policy naming a host: our forwarder then parses this sandbox's traffic.
    rec = sandboxes.create(network=parse(allow_out=["svc.walls.example"]))
    code = """
import json, os, random, socket, struct, sys
gw = sys.argv[1]
random.seed(7)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
q = bytes.fromhex("abcd01000001000000000000") + b"\\x03svc\\x05walls\\x07example\\x00\\x00\\x01\\x00\\x01"
cases = [os.urandom(random.randint(0, 600)) for _ in range(300)] + [q[:n] for n in range(len(q))] \\
    + [q + os.urandom(3000), b"\\xff" * 12 + b"\\xc0\\x0c" * 200, q[:12] + b"\\x3f" + b"a" * 63 + b"\\x00"]
for c in cases:
    u.sendto(c, (gw, 53))
for c in (b"\\xff\\xff" + os.urandom(100), b"\\x00", b"\\x00\\x05abc", struct.pack("!H", len(q)) + q[:-3]):
    t = socket.create_connection((gw, 53), timeout=3); t.sendall(c); t.close()
u.settimeout(1)
ok = 0
for i in range(20):  # answers to the fuzz may still arrive: count only ours, stop at 3
    u.sendto(q, (gw, 53))
    try:
        ok += u.recv(4096)[:2] == q[:2]
    except OSError:
        pass
    if ok >= 3:
        break
print(json.dumps(ok))
"""
    res = sandboxes.run(rec, "python3", "-c", code, str(settings.gateway), timeout=90)
    assert res["exit_code"] == 0, res
    ok = json.loads(res["out"].strip().splitlines()[-1])
    assert ok >= 3, res
    assert sandboxes.run(rec, "getent", "hosts", "svc.walls.example")["out"].strip()


def test_dns_tunnel_without_internet_never_reaches_an_upstream(sandboxes, settings, tmp_path):
    """With ``allow_internet_access: false`` a query for any name, to our resolver or
    straight to an outside server, must not reach a DNS server."""
    upstream = TestHost("dns", [PUBLIC], tmp_path)
    log = tmp_path / "dns-queries.log"
    dns = subprocess.Popen(["ip", "netns", "exec", upstream.ns, sys.executable, "-c", """
import socket, sys
log = open(sys.argv[2], "ab", buffering=0)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((sys.argv[1], 53))
print("ready", flush=True)
while True:
    log.write(s.recv(4096) + b"\\n")
""", upstream.addresses[0], str(log)], stdout=subprocess.PIPE)
    try:
        assert dns.stdout and dns.stdout.readline().strip() == b"ready"
        with resolver_upstream(settings.data_dir, upstream.addresses[0]):
            rec = sandboxes.create(network=parse(allow_internet_access=False))
            code = """
import socket, sys
q = bytes.fromhex("abcd01000001000000000000") + b"\\x0bexfiltrated\\x06tunnel\\x07example\\x00\\x00\\x01\\x00\\x01"
for dst in (sys.argv[1], sys.argv[2]):
    for _ in range(3):
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try: u.sendto(q, (dst, 53))
        except OSError: pass
    try: socket.create_connection((dst, 53), timeout=1).sendall(b"\\x00" + bytes([len(q)]) + q)
    except OSError: pass
print("sent")
"""
            sandboxes.run(rec, "python3", "-c", code, str(settings.gateway), upstream.addresses[0])
            time.sleep(1)
        assert b"exfiltrated" not in log.read_bytes()
    finally:
        dns.kill()
        dns.wait(5)
        upstream.close()


# -- the walls follow the sandbox -------------------------------------------------------


def _pinned(settings, rec) -> bool:
    """The port's element is in the bridge table and the host's neighbour entry is pinned."""
    veth = ids.host_veth(rec.id)
    listed = subprocess.run(["nft", "list", "set", "bridge", settings.nft_table, "port_addrs"],
                            capture_output=True, text=True).stdout
    return f"\"{veth}\" . {mac_of(rec)} . {rec.ip}" in listed and "PERMANENT" in host_neigh(rec.ip, settings.bridge)


def test_walls_follow_suspend_resume_clone_and_restore(sandboxes, manager, loop_thread, settings, public_host):
    rec = sandboxes.create(name=f"walls-mem-{int(time.time() * 1000) % 10**6}")  # only named ones suspend
    loop_thread.run(manager.memory.suspend(rec.id))
    rec = loop_thread.run(manager.memory.resume(rec.id))
    clone = loop_thread.run(manager.memory.clone(rec.id, 1))[0]
    assert not isinstance(clone, Exception), clone
    sandboxes.made.append(clone.id)
    snap = loop_thread.run(manager.memory.snapshot(rec.id))
    try:
        restored = loop_thread.run(manager.memory.restore(snap.id))
        sandboxes.made.append(restored.id)
    finally:
        loop_thread.run(manager.memory.delete_snapshot(snap.id))
    dst = public_host.addresses[0]
    for r in (rec, clone, restored):
        assert _pinned(settings, r), r.id
        udp_send(r, "203.0.113.98", dst, f"forged-{r.id}")
        udp_send(r, r.ip, dst, f"own-{r.id}")
    time.sleep(0.5)
    got = set(public_host.received())
    assert {f"own-{r.id}".encode() for r in (rec, clone, restored)} <= got
    assert not any(g.startswith(b"forged-") for g in got), got
    # Teardown removes them: nothing of the clone's is left in the host's tables.
    sandboxes.destroy(clone)
    assert not _pinned(settings, clone)
    assert ids.host_veth(clone.id) not in subprocess.run(
        ["nft", "list", "table", "bridge", settings.nft_table], capture_output=True, text=True).stdout


def test_reconcile_removes_the_walls_of_ports_nobody_owns(manager, loop_thread, settings):
    """A crash between pin and teardown leaves elements; reconcile removes them (a stale
    element would let a later port of the same name send as the old address)."""
    from cellbox.manager.reconcile import reconcile
    from cellbox.network import walls

    sid, ip = ids.new_id(), ipaddress.IPv4Address("10.210.255.249")  # no record has this ID
    loop_thread.run(walls.pin(settings, sid, ip, mac_for(ip)))
    listing = lambda: subprocess.run(["nft", "list", "table", "bridge", settings.nft_table],  # noqa: E731
                                     capture_output=True, text=True, check=True).stdout
    assert ids.host_veth(sid) in listing()
    loop_thread.run(reconcile(manager))
    assert ids.host_veth(sid) not in listing()


def test_a_failed_network_create_leaves_no_walls_behind(loop_thread, settings, monkeypatch):
    from cellbox.errors import CommandFailed
    from cellbox.network import netns, walls

    sid, ip = ids.new_id(), ipaddress.IPv4Address("10.210.255.248")  # no record has this ID
    monkeypatch.setattr(walls, "port_link_batch", lambda veth, mac: f"link set dev {veth} no-such-option on\n")
    try:
        with pytest.raises(CommandFailed):
            loop_thread.run(netns.create(settings, sid, ip))
    finally:  # whatever happened, nothing of this test stays on the host
        leftover = (netns.exists(sid), Path(f"/sys/class/net/{ids.host_veth(sid)}").exists())
        loop_thread.run(netns.destroy(settings, sid, ip))
    assert leftover == (False, False)
    table = subprocess.run(["nft", "list", "table", "bridge", settings.nft_table], capture_output=True, text=True).stdout
    assert ids.host_veth(sid) not in table
    assert not host_neigh(str(ip), settings.bridge).strip()
