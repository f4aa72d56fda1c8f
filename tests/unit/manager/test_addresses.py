"""The address allocator at density (issue 15): past one /24's 254 addresses, lowest
free first, and a clear 429 before the bridge's 1023 ports run out. Real store
(SQLite in tmp_path), real ``Assembler.allocate``."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress

import pytest

from cellbox import ids
from cellbox.errors import LimitExceeded
from cellbox.manager import addresses
from cellbox.manager.records import SandboxRecord, Status


def _rec() -> SandboxRecord:
    return SandboxRecord(id=ids.new_id(), namespace="default", image="img", cpus=1.0, memory_mb=512, disk_mb=1024)


@pytest.fixture
def wide(node):
    """The fixture's node on the default-sized /16."""
    node.assembler.settings = dataclasses.replace(node.settings, subnet=ipaddress.IPv4Network("10.98.0.0/16"))
    return node


def test_allocates_past_one_slash24_lowest_free_first(wide) -> None:
    recs = [_rec() for _ in range(300)]
    for rec in recs:
        asyncio.run(wide.assembler.allocate(rec))
    got = [ipaddress.IPv4Address(r.ip) for r in recs]
    # 10.98.0.1 is the gateway: sandboxes get .0.2 upwards, through .0.255 and on into .1.x
    assert got == [ipaddress.IPv4Address(int(ipaddress.IPv4Address("10.98.0.2")) + i) for i in range(300)]
    assert str(got[253]) == "10.98.0.255" and str(got[254]) == "10.98.1.0"
    # a freed address is the next one handed out
    recs[100].status = Status.TERMINATED
    wide.store.update(recs[100])
    again = _rec()
    asyncio.run(wide.assembler.allocate(again))
    assert again.ip == recs[100].ip


def test_refuses_before_the_bridge_is_full(wide) -> None:
    """Running sandboxes fill the bridge; suspended ones (no veth) hold an address only."""
    base = int(ipaddress.IPv4Address("10.98.0.2"))
    suspended = 300
    for i in range(addresses.BRIDGE_PORTS - 1 + suspended):
        rec = _rec()
        rec.ip = str(ipaddress.IPv4Address(base + i))
        rec.status = Status.SUSPENDED if i < suspended else Status.RUNNING
        wide.store.insert(rec)
    assert wide.store.on_bridge() == addresses.BRIDGE_PORTS - 1
    last = _rec()
    asyncio.run(wide.assembler.allocate(last))  # the 1023rd on the bridge still fits
    assert last.ip == str(ipaddress.IPv4Address(base + addresses.BRIDGE_PORTS - 1 + suspended))
    over = _rec()
    with pytest.raises(LimitExceeded, match="at most 1023 sandboxes") as exc:
        asyncio.run(wide.assembler.allocate(over))
    assert exc.value.status == 429
    assert wide.store.get(over.id) is None  # nothing half-made


def test_small_subnet_capacity_is_its_hosts(node) -> None:
    # /29: 8 addresses - network, broadcast, gateway = 5 sandboxes
    assert addresses.capacity(node.settings.subnet) == 5
    for _ in range(5):
        asyncio.run(node.assembler.allocate(_rec()))
    with pytest.raises(LimitExceeded):
        asyncio.run(node.assembler.allocate(_rec()))


def test_lowest_free_skips_gateway_and_used() -> None:
    net = ipaddress.IPv4Network("10.1.0.0/16")
    gw = ipaddress.IPv4Address("10.1.0.1")
    assert str(addresses.lowest_free(net, gw, [])) == "10.1.0.2"
    assert str(addresses.lowest_free(net, gw, ["10.1.0.2", "10.1.0.4"])) == "10.1.0.3"
    full = ipaddress.IPv4Network("10.1.0.0/30")  # hosts .1 (gateway) and .2
    assert addresses.lowest_free(full, gw, ["10.1.0.2"]) is None


def test_resume_is_refused_when_the_bridge_is_full() -> None:
    net = ipaddress.IPv4Network("10.98.0.0/16")
    addresses.check_room(net, addresses.BRIDGE_PORTS - 1, resuming=True)
    with pytest.raises(LimitExceeded, match="cannot resume"):
        addresses.check_room(net, addresses.BRIDGE_PORTS, resuming=True)
