"""The hand-written async SDK; ``_sync/`` is generated from it by ``scripts/unasync.py``."""

from .client import AsyncSandboxClient
from .process import AsyncProcess
from .pty import AsyncPty
from .sandbox import AsyncSandbox
from .tunnel import AsyncTunnel
from .websocket import AsyncWebSocket

__all__ = ["AsyncProcess", "AsyncPty", "AsyncSandbox", "AsyncSandboxClient", "AsyncTunnel", "AsyncWebSocket"]
