"""A node made of fakes: a real Settings, a real record store (SQLite in tmp_path),
fake runtime, storage, network and agent (``fakes.py``). No root, no btrfs, no runc."""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterator
from pathlib import Path

import pytest

from cellbox.config import Settings
from cellbox.manager.assemble import Assembler
from cellbox.manager.sources import BootSource
from cellbox.manager.store import Store

from .fakes import FakeAgent, FakeNetwork, FakeRuntime, FakeStorage, World


@dataclasses.dataclass
class Node:
    world: World
    settings: Settings
    store: Store
    assembler: Assembler
    agent: FakeAgent
    tmp: Path

    def boot_source(self) -> BootSource:
        image = self.tmp / "image"
        image.mkdir(exist_ok=True)
        return BootSource("cellbox/debian:latest", 100, image, None, self.tmp / "agentfs")


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    settings = Settings(data_dir=tmp_path / "data", subnet=ipaddress.IPv4Network("10.99.0.0/29"), userns=False,
                        warm_pool_size=0)
    (tmp_path / "data").mkdir()
    store = Store(tmp_path / "data" / "cellbox.db")
    world = World()
    agent = FakeAgent(world)
    assembler = Assembler(settings, store, FakeRuntime(world), FakeStorage(world, tmp_path / "pool"),
                          FakeNetwork(world), agent)
    yield Node(world, settings, store, assembler, agent, tmp_path)
    store.close()
