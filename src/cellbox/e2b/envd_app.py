"""The envd view: one ASGI app (Connect services + HTTP file routes), run by the proxy.

The proxy serves every request for port 49983 of a sandbox with this app in its own
process (``proxy/local_app.py``; ``view.py`` answers the proxy's resolver with it), so
TLS, routing by ``{port}-{id}.{domain}`` or ``E2b-Sandbox-Id``, streaming and
keep-alive stay the proxy's. ``EnvdServer`` (a loopback uvicorn the proxy forwards to,
the first design) stays for the before/after bench: ``CELLBOX_E2B_LOOPBACK=1``. The
Connect protocol (unary and server streaming, binary protobuf and JSON, envelopes,
errors) is connectrpc's, from stubs generated out of ``proto/envd``.
"""

from __future__ import annotations

import logging
from typing import Any

from connectrpc.codec import proto_binary_codec, proto_json_codec
from connectrpc.code import Code
from connectrpc.errors import ConnectError
from starlette.types import Receive, Scope, Send

from . import files_http
from .context import Env
from .fs_svc import FilesystemService
from .gen.filesystem.filesystem_connect import FilesystemASGIApplication
from .gen.process.process_connect import ProcessASGIApplication
from .process_svc import ProcessService

log = logging.getLogger(__name__)
MAX_RPC = 8 << 20  # one Connect message (SendInput chunks, listings)


class _Strict:
    """connectrpc's codec, but a message that does not decode is the client's error
    (INVALID_ARGUMENT, 400), not connectrpc's catch-all UNKNOWN (500)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def name(self) -> str:
        return str(self.inner.name())

    def encode(self, message: Any) -> bytes:
        return bytes(self.inner.encode(message))

    def decode(self, data: bytes | bytearray, message_class: type[Any]) -> Any:
        try:
            return self.inner.decode(data, message_class)
        except ConnectError:
            raise
        except Exception as exc:
            raise ConnectError(Code.INVALID_ARGUMENT, f"request is not a valid {message_class.__name__}: {exc}") from None


def build(env: Env) -> Any:
    codecs = [_Strict(proto_binary_codec()), _Strict(proto_json_codec())]
    process = ProcessASGIApplication(ProcessService(env), read_max_bytes=MAX_RPC, codecs=codecs)
    filesystem = FilesystemASGIApplication(FilesystemService(env), read_max_bytes=MAX_RPC, codecs=codecs)
    files = files_http.build(env)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if path.startswith("/process.Process/"):
            await process(scope, receive, send)
        elif path.startswith("/filesystem.Filesystem/"):
            await filesystem(scope, receive, send)
        else:
            await files(scope, receive, send)

    return app
