"""The examples run against the shared live server (tests/sdk/live_server.py)."""

from __future__ import annotations



from ..sdk.live_server import live_server  # noqa: F401 (fixtures)


