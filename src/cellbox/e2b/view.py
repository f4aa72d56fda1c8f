"""The E2B view as the server starts it: tokens, the envd and code-interpreter apps,
the REST handlers' state, and the proxy's resolver for ports 49983 / 49999 and E2B
traffic tokens.

``cellbox.server`` calls ``E2BView.start`` / ``stop`` and hands ``wrap`` the proxy's
resolver; that is the whole hook. ``CELLBOX_E2B=0`` leaves it out.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

from .. import ids
from ..auth.keys import Principal, Role
from ..config import Settings
from ..errors import NotFound
from .manager_api import SandboxService, record
from .context import ENVD_PORT, Env
from ..proxy.local_app import LocalApp
from .envd_app import build
from . import interp_app, link
from .link import AGENT_PORT
from .rest import E2BRest
from .tokens import TokenKey

Resolver = Callable[[str, int, bytes | None], Awaitable[tuple[Any, ...]]]
LOCAL_DOMAIN = "local"  # {port}-{id}.local is routed by the proxy without --proxy-domain


class E2BView:
    def __init__(self, service: SandboxService, settings: Settings, domain: str | None) -> None:
        self.service = service
        self.tokens = TokenKey(settings.data_dir)
        self.rest = E2BRest(self.tokens, domain or LOCAL_DOMAIN)
        env = Env(service, self.tokens, domain)
        # Both served in the proxy's own process (proxy/local_app.py).
        self.local = LocalApp(build(env))
        self.interp = LocalApp(interp_app.build(env))  # e2b-code-interpreter (interp_app.py)

    async def start(self) -> None:
        pass  # nothing to listen on: the proxy runs the apps

    async def stop(self) -> None:
        await link.close()

    def wrap(self, resolver: Resolver) -> Resolver:
        """Port 49983 of a sandbox is the envd app (which checks the envd token), port
        49999 without a cellbox key the code-interpreter app (it checks the traffic or
        envd token), both run by the proxy itself (``LocalApp``); any other port is reachable with the sandbox's traffic token in
        ``e2b-traffic-access-token`` (E2B's header; the proxy passes it as the
        credential when there is no Authorization), as E2B's SDK users expect of
        every port; everything else is the resolver's as before."""

        async def resolve(ref: str, port: int, credential: bytes | None, *request: bytes) -> tuple[Any, ...]:
            if port == ENVD_PORT:
                if not ids.is_id(ref):  # envd tokens are per sandbox ID, never per name
                    raise NotFound(f"sandbox {ref!r} not found", code="SANDBOX_NOT_FOUND")
                return self.local, 0, ref
            if port == interp_app.INTERP_PORT and ids.is_id(ref) and (
                    credential is None or self._traffic_ok(ref, credential)):
                # e2b-code-interpreter (it sends no Authorization; the app checks its
                # tokens). With a cellbox key, port 49999 is the sandbox's own, as before.
                return self.interp, 0, ref
            if credential and ids.is_id(ref) and port != AGENT_PORT and self._traffic_ok(ref, credential):
                rec = record(self.service, ref)
                if rec is not None:
                    principal = Principal("e2b-traffic-token", rec.namespace, Role.MEMBER)
                    ip = (await self.service.resolve(rec.id, AGENT_PORT, principal))[0]
                    return ip, port, rec.id
            return await resolver(ref, port, credential, *request)  # request: method, target (door audit)

        return resolve

    def _traffic_ok(self, sandbox_id: str, credential: bytes) -> bool:
        value = credential.decode("latin-1").strip()
        if value.lower().startswith("bearer "):
            value = value[7:].strip()
        return hmac.compare_digest(value.encode(), self.rest.traffic_token(sandbox_id).encode())
