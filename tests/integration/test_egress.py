"""Egress policies (issue 5): allow/deny by address, CIDR and host name; live updates.

Every packet goes to the test "internet" (tests/nettest/internet.py): a namespace this
test builds on TEST-NET-2 addresses, with HTTP, TCP/UDP echo and a DNS server whose
answers the test changes. Probes run inside the sandbox (tests/nettest/probe.py).
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from cellbox.errors import InvalidRequest
from cellbox.manager.service import Changes, SandboxService
from cellbox.network import firewall
from cellbox.network.policy import parse

from ..nettest.internet import ADDRS, DNS, ECHO_PORT, HTTP_PORT, probe_source

pytestmark = pytest.mark.root

PROBE = probe_source()
A, B, C = ADDRS  # A is also the test DNS server


def probe(sandboxes, rec, *checks: tuple[str, str]) -> dict[str, str]:
    res = sandboxes.run(rec, "python3", "-c", PROBE, json.dumps(checks), timeout=60)
    assert res["exit_code"] == 0, res
    return json.loads(res["out"])


def all_kinds(addr: str) -> list[tuple[str, str]]:
    return [("tcp", f"{addr}:{ECHO_PORT}"), ("udp", f"{addr}:{ECHO_PORT}"), ("icmp", addr)]


def outcome(results: dict[str, str]) -> dict[str, str]:
    """``{"tcp 1.2.3.4:9000": "ok" | "blocked"}``: the verdict without the detail."""
    return {k: v.split(":")[0] for k, v in results.items()}


def test_no_internet_blocks_everything_including_dns(sandboxes, internet):
    internet.set_zone({"svc.test.example": [B]})
    rec = sandboxes.create(network=parse(allow_internet_access=False))
    got = outcome(probe(sandboxes, rec, *all_kinds(B), ("dns", "svc.test.example"), ("dns@", f"{DNS}/svc.test.example")))
    assert set(got.values()) == {"blocked"}, got


def test_allow_list_is_default_deny_with_the_resolver_allowed(sandboxes, internet):
    internet.set_zone({"svc.test.example": [C]})
    rec = sandboxes.create(network=parse(allow_out=[B]))
    got = outcome(probe(sandboxes, rec, *all_kinds(B), *all_kinds(C), ("dns", "svc.test.example")))
    expected = ({f"{k} {t}": "ok" for k, t in all_kinds(B)} | {f"{k} {t}": "blocked" for k, t in all_kinds(C)}
                | {"dns svc.test.example": "ok"})
    assert got == expected


def test_deny_beats_allow_and_cidrs_work(sandboxes, internet):
    rec = sandboxes.create(network=parse(allow_out=["198.51.100.0/24"], deny_out=[f"{C}/32"]))
    got = outcome(probe(sandboxes, rec, *all_kinds(B), *all_kinds(C)))
    assert [got[f"{k} {t}"] for k, t in all_kinds(B)] == ["ok"] * 3, got
    assert [got[f"{k} {t}"] for k, t in all_kinds(C)] == ["blocked"] * 3, got
    # Deny only (allow all else): the denied address is blocked, the rest is not.
    rec2 = sandboxes.create(network=parse(deny_out=[B]))
    got2 = outcome(probe(sandboxes, rec2, ("tcp", f"{B}:{ECHO_PORT}"), ("tcp", f"{C}:{ECHO_PORT}")))
    assert got2 == {f"tcp {B}:{ECHO_PORT}": "blocked", f"tcp {C}:{ECHO_PORT}": "ok"}


def test_an_allowed_host_name_follows_its_dns_answers(sandboxes, internet, settings):
    internet.set_zone({"api.test.example": [B]})
    rec = sandboxes.create(network=parse(allow_out=["api.test.example"]))
    url = f"http://api.test.example:{HTTP_PORT}/"
    assert sandboxes.sh(rec, f"curl -s --max-time 5 {url}")["out"] == B
    assert outcome(probe(sandboxes, rec, ("tcp", f"{C}:{ECHO_PORT}"))) == {f"tcp {C}:{ECHO_PORT}": "blocked"}
    # The name moves to C: the sandbox's next lookup teaches the rules the new address.
    internet.set_zone({"api.test.example": [C]})
    res = sandboxes.sh(rec, f"curl -s --max-time 5 {url}")
    assert res["exit_code"] == 0 and res["out"] == C, res
    # Learned addresses expire with the answer's TTL (5 s from the test server) plus grace.
    listing = json.loads(subprocess.run(
        ["nft", "-j", "list", "set", "inet", settings.nft_table, f"{firewall.chain(rec.id)}-an4"],
        capture_output=True, text=True, check=True).stdout)
    elems = [e for item in listing["nftables"] if "set" in item for e in item["set"].get("elem", [])]
    timeouts = {e["elem"]["val"]: e["elem"]["timeout"] for e in elems}
    assert C in timeouts and timeouts[C] <= 5 + firewall.LEARN_GRACE_SECS, timeouts


def test_a_denied_name_cannot_be_resolved_around_our_resolver(sandboxes, internet):
    internet.set_zone({"bad.test.example": [C]})
    rec = sandboxes.create(network=parse(deny_out=["bad.test.example"]))
    # Asking the test DNS server directly is redirected to our forwarder, which learns it.
    got = probe(sandboxes, rec, ("dns@", f"{DNS}/bad.test.example"), ("tcp", f"{C}:{ECHO_PORT}"),
                ("tcp", f"{B}:{ECHO_PORT}"))
    assert got[f"dns@ {DNS}/bad.test.example"] == f"ok:{C}"
    assert outcome(got)[f"tcp {C}:{ECHO_PORT}"] == "blocked"
    assert got[f"tcp {B}:{ECHO_PORT}"] == "ok"
    # The name moves to B; a lookup over TCP (to any server) teaches the rules too.
    internet.set_zone({"bad.test.example": [B]})
    got = probe(sandboxes, rec, ("dnstcp@", f"{DNS}/bad.test.example"), ("tcp", f"{B}:{ECHO_PORT}"))
    assert got[f"dnstcp@ {DNS}/bad.test.example"] == f"ok:{B}"
    assert outcome(got)[f"tcp {B}:{ECHO_PORT}"] == "blocked"


def test_an_unresolvable_name_is_refused_before_anything_is_made(manager, loop_thread, internet):
    from cellbox.manager.sandboxes import CreateSpec

    name = f"egress-bad-{int(time.time() * 1000) % 10**6}"
    published = set(manager.egress.published())
    with pytest.raises(InvalidRequest, match="nosuch.test.example"):
        loop_thread.run(manager.create(CreateSpec(name=name, network=parse(allow_out=["nosuch.test.example"]))))
    assert manager.store.get_by_name("default", name) is None  # not even a failed record
    assert set(manager.egress.published()) <= published


def test_live_update_applies_at_once_and_keeps_established_connections(sandboxes, manager, loop_thread, internet):
    service = SandboxService(manager, proxy_port=1)
    rec = sandboxes.create(name=f"egress-live-{int(time.time() * 1000) % 10**6}")
    # A long-lived connection to B, held by a background process that echoes once a second.
    hold = (
        "import socket,sys,time\n"
        f"s=socket.create_connection(('{B}',{ECHO_PORT}))\n"
        "for i in range(120):\n"
        "    s.sendall(b'x'); assert s.recv(1)==b'x'; print('alive',flush=True); time.sleep(0.25)\n"
    )
    with sandboxes.agent(rec) as agent:
        started = agent.post("/api/v1/processes", json={"command": "python3", "args": ["-c", hold]})
        assert started.status_code == 201, started.text
        pid = started.json()["pid"]
        time.sleep(1.0)
        t0 = time.monotonic()
        loop_thread.run(service.update(rec.id, "default", Changes(network_set=True, network=parse(deny_out=[B]))))
        applied = time.monotonic() - t0
        assert outcome(probe(sandboxes, rec, ("tcp", f"{B}:{ECHO_PORT}"))) == {f"tcp {B}:{ECHO_PORT}": "blocked"}
        assert applied < 1.0, f"the update took {applied:.2f}s"
        print(f"live policy update applied in {applied * 1000:.1f} ms")
        lines_before = agent.get(f"/api/v1/processes/{pid}/output").json()["lines"]
        time.sleep(1.0)
        info = agent.get(f"/api/v1/processes/{pid}").json()
        lines_after = agent.get(f"/api/v1/processes/{pid}/output").json()["lines"]
        assert info["status"] == "running", info  # the established connection still works
        assert len(lines_after) > len(lines_before)
        # Clearing the policy (null) opens the address again.
        loop_thread.run(service.update(rec.id, "default", Changes(network_set=True, network=None)))
        assert outcome(probe(sandboxes, rec, ("tcp", f"{B}:{ECHO_PORT}"))) == {f"tcp {B}:{ECHO_PORT}": "ok"}
        assert "network_policy" not in manager.get(rec.id).extra
        agent.delete(f"/api/v1/processes/{pid}")


def test_a_failed_update_keeps_the_old_policy(sandboxes, manager, loop_thread, internet):
    service = SandboxService(manager, proxy_port=1)
    rec = sandboxes.create(network=parse(deny_out=[B]))
    with pytest.raises(InvalidRequest, match="nosuch.test.example"):
        loop_thread.run(service.update(rec.id, "default",
                                       Changes(network_set=True, network=parse(allow_out=["nosuch.test.example"]))))
    got = outcome(probe(sandboxes, rec, ("tcp", f"{B}:{ECHO_PORT}"), ("tcp", f"{C}:{ECHO_PORT}")))
    assert got == {f"tcp {B}:{ECHO_PORT}": "blocked", f"tcp {C}:{ECHO_PORT}": "ok"}
    assert manager.get(rec.id).extra["network_policy"]["deny_out"] == [B]


def test_policies_survive_suspend_resume_and_clone(sandboxes, manager, loop_thread, internet):
    rec = sandboxes.create(name=f"egress-mem-{int(time.time() * 1000) % 10**6}", network=parse(allow_out=[B]))
    expected = {f"tcp {B}:{ECHO_PORT}": "ok", f"tcp {C}:{ECHO_PORT}": "blocked"}
    checks = [("tcp", f"{B}:{ECHO_PORT}"), ("tcp", f"{C}:{ECHO_PORT}")]
    loop_thread.run(manager.memory.suspend(rec.id))
    rec = loop_thread.run(manager.memory.resume(rec.id))
    assert outcome(probe(sandboxes, rec, *checks)) == expected
    clones = loop_thread.run(manager.memory.clone(rec.id, 2))
    for clone in clones:
        assert not isinstance(clone, Exception), clone
        sandboxes.made.append(clone.id)
    assert len({c.ip for c in clones} | {rec.ip}) == 3
    for clone in clones:
        assert outcome(probe(sandboxes, clone, *checks)) == expected
        assert clone.extra["network_policy"]["allow_out"] == [B]
    # Restored from a snapshot: the snapshot carries the policy; a create may replace it.
    snap = loop_thread.run(manager.memory.snapshot(rec.id))
    try:
        restored = loop_thread.run(manager.memory.restore(snap.id))
        sandboxes.made.append(restored.id)
        assert outcome(probe(sandboxes, restored, *checks)) == expected
        other = loop_thread.run(manager.memory.restore(snap.id, network=parse(deny_out=[B])))
        sandboxes.made.append(other.id)
        assert outcome(probe(sandboxes, other, *checks)) == {f"tcp {B}:{ECHO_PORT}": "blocked",
                                                            f"tcp {C}:{ECHO_PORT}": "ok"}
    finally:
        loop_thread.run(manager.memory.delete_snapshot(snap.id))
    # A clone's rules go with it; the source's stay.
    sandboxes.destroy(clones[0])
    assert firewall.chain(clones[0].id)[4:] not in loop_thread.run(firewall.chains(manager.settings.nft_table))
    assert outcome(probe(sandboxes, rec, *checks)) == expected


def test_reconcile_removes_rules_nobody_owns(manager, loop_thread, settings):
    from cellbox import ids
    from cellbox.manager.reconcile import reconcile

    sid, ip = ids.new_id(), "10.210.255.250"  # no record has this ID: a crashed create's leftovers
    loop_thread.run(manager.egress.apply(sid, ip, parse(deny_out=["192.0.2.1"])))
    (manager.egress.dir / f"{sid}.json").unlink()  # and its published policy lost as well
    assert sid in loop_thread.run(firewall.chains(settings.nft_table))
    loop_thread.run(reconcile(manager))
    assert sid not in loop_thread.run(firewall.chains(settings.nft_table))
    listing = subprocess.run(["nft", "list", "map", "inet", settings.nft_table, firewall.EGRESS_MAP],
                             capture_output=True, text=True, check=True).stdout
    assert ip not in listing
    assert not (manager.egress.by_ip / ip).is_symlink()
