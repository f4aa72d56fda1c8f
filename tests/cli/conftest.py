"""Fixtures for the CLI tests: the shared live server, and a runner for ``cellbox`` subprocesses."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

import pytest

from ..sdk.live_server import CELLBOX, LiveServer, Tracker
from ..sdk.live_server import live_server, tracker  # noqa: F401 (fixtures)


@dataclass
class CLI:
    server: LiveServer
    tracker: Tracker

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 180, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(CELLBOX), *args],
            env=self.server.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
        )
        if check:
            assert proc.returncode == 0, f"cellbox {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        return proc

    def new(self, *args: str) -> str:
        sandbox_id = self("new", "-m", "512", *args).stdout.strip()
        return self.tracker.add(sandbox_id)


@pytest.fixture
def cli(live_server: LiveServer, tracker: Tracker) -> CLI:
    return CLI(live_server, tracker)


@pytest.fixture
def sandbox_id(cli: CLI) -> str:
    return cli.new()
