"""The hand-written async SDK; ``_sync/`` is generated from it by ``scripts/unasync.py``."""

from .client import AsyncSandboxClient
from .images import AsyncImages
from .process import AsyncProcess
from .pty import AsyncPty
from .sandbox import AsyncSandbox
from .tunnel import AsyncTunnel
from .volumes import AsyncVolumes
from .websocket import AsyncWebSocket

__all__ = ["AsyncImages", "AsyncProcess", "AsyncPty", "AsyncSandbox", "AsyncSandboxClient", "AsyncTunnel", "AsyncVolumes", "AsyncWebSocket"]
