"""Forward one request to its sandbox and its response back, streaming both ways.

Order of work for a request: route (headers only) -> resolve (may wait while the
manager resumes the sandbox) -> connect -> then two tasks run side by side:

* upload:   request body, client -> agent; then keep reading the client socket so
            a disconnect is noticed while the response is still running;
* download: response, agent -> client, chunk by chunk (SSE events leave as they come).

Both directions run at once because HTTP does not wait for the request to end: the
agent may answer early (an error before the body is read, ``100 Continue``), and a
client that vanishes must stop the agent's work at once. Whichever side fails ends
the exchange; the upstream connection is then aborted, never reused.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

import h11

from ..agent import auth
from ..errors import CellboxError
from . import errors, headers, routing
from .activity import ActivityCallback, ActivityTicker
from .client import ClientConnection, ClientGone
from .inflight import InFlight
from .local_app import AppBroken, LocalApp
from . import local_app
from .splice import splice
from .upstream import Upstream

log = logging.getLogger(__name__)

# (ref, port) -> (ip, port, sandbox_id) or (ip, port, sandbox_id, agent_key); with
# ``Hooks.authorize`` also the request's ``Authorization`` value as a third argument
# (the resolver decides who may pass). With a key (bytes), the answer must carry the
# agent's proof for the nonce the proxy sends (agent/auth.py). A fifth element, a list
# of (name, value) headers, is added to the upstream request: the cluster's control
# plane uses it to present its node credential to the node's proxy (cluster/nodeauth.py).
Resolver = Callable[..., Awaitable[tuple[Any, ...]]]


@dataclass(frozen=True, slots=True)
class Hooks:
    """What the proxy is given from outside, plus its tunables."""

    resolver: Resolver
    on_activity: ActivityCallback
    connect_timeout: float
    activity_interval: float
    # How long the agent may take to start its answer once the request body stopped
    # moving: an agent that never answers (or dribbles its head) gets a 504, not a
    # request that waits forever. Long enough for a managed restart's stop grace.
    head_timeout: float = 120.0
    authorize: bool = False
    domain: str | None = None  # public proxy domain routed like .local
    inflight: InFlight | None = None  # open exchanges by sandbox (live migration drains them)


_PROOF = auth.PROOF_HEADER.encode()
_AUTH_HEADERS = frozenset(h.encode() for h in (auth.NONCE_HEADER, auth.PROOF_HEADER, auth.ROTATE_HEADER))

# Upstream states after which closing gracefully loses nothing the agent still needs.
_FINISHED = (h11.DONE, h11.MUST_CLOSE, h11.CLOSED, h11.SWITCHED_PROTOCOL)


class UpstreamBroken(Exception):
    """The agent's response broke off after its head was relayed: the client must be cut."""


class Exchange:
    """One request/response cycle on a client connection."""

    def __init__(self, client: ClientConnection, request: h11.Request, hooks: Hooks) -> None:
        self.client = client
        self.request = request
        self.hooks = hooks
        self.key: bytes | None = None  # the agent's key, when the target is the agent
        self.extra: list[tuple[bytes, bytes]] = []  # the resolver's upstream headers (cluster)
        self.nonce = ""
        self._upload_moved = 0.0  # loop time of the last request-body progress
        self._head_deadline: asyncio.Timeout | None = None  # while waiting for the head

    async def run(self) -> bool:
        """Handle the request; True if the client connection may carry another one."""
        upstream: Upstream | None = None
        try:
            try:
                routing.refuse_ambiguous(self.request.target, self.request.headers)
            except errors.ProxyError as err:
                await self.client.send_error(err, close=True)
                return False  # nothing after this request on the connection is trusted
            try:
                target = routing.target_of(self.request.headers, self.hooks.domain)
                ip, port, sandbox_id, self.key = await self._resolve(target)
                ticker = ActivityTicker(self.hooks.on_activity, sandbox_id, self.hooks.activity_interval)
                if isinstance(ip, LocalApp):  # served here, not forwarded (local_app.py)
                    return await local_app.serve(self.client, self.request, ip.app, ticker)
                upstream = await self._connect(ip, port, sandbox_id)
            except errors.ProxyError as err:
                await self.client.send_error(err)
                return True
            inflight = self.hooks.inflight
            with inflight.open(sandbox_id) if inflight is not None else contextlib.nullcontext():
                keep = await self._forward(upstream, sandbox_id, ticker)
            if upstream.h11.their_state is h11.MUST_CLOSE:  # the agent closes now: let it go first
                await upstream.release()
            return keep
        except ClientGone:
            return False
        except (UpstreamBroken, AppBroken) as exc:
            log.info("%s", exc)
            self.client.broken = True  # a FIN could pass a truncated body off as complete
            return False
        except Exception as exc:  # a bug of ours: log it, answer if we still can
            log.exception("internal error on %s %r", self.request.method, self.request.target)
            if self.client.can_respond():
                try:
                    await self.client.send_error(errors.internal(type(exc).__name__))
                except (ClientGone, h11.LocalProtocolError):
                    pass
            return False
        finally:
            if upstream is not None:  # no-op after release(); abort if the exchange broke off
                upstream.close(abort=upstream.h11.their_state not in _FINISHED)

    async def _resolve(self, target: routing.Target) -> tuple[Any, int, str, bytes | None]:
        try:
            if self.hooks.authorize:
                credential = headers.value(self.request.headers, b"authorization")
                if credential is None:  # E2B's traffic token (cellbox/e2b/view.py decides)
                    credential = headers.value(self.request.headers, b"e2b-traffic-access-token")
                # Method and target too: the door audits state-changing calls (auth/audit.py).
                found = await self.hooks.resolver(target.ref, target.port, credential, self.request.method,
                                                  self.request.target)
            else:
                found = await self.hooks.resolver(target.ref, target.port)
            ip, port, sandbox_id = found[:3]
            self.extra = list(found[4]) if len(found) > 4 else []
            return ip, port, sandbox_id, (found[3] if len(found) > 3 else None)
        except CellboxError as err:
            raise errors.from_cellbox(err) from None
        except Exception as exc:
            log.exception("resolver failed for %r port %d", target.ref, target.port)
            raise errors.internal(f"resolver failed: {type(exc).__name__}") from None

    async def _connect(self, ip: str, port: int, sandbox_id: str) -> Upstream:
        try:
            return await Upstream.connect(ip, port, self.hooks.connect_timeout)
        except TimeoutError:
            raise errors.unreachable(sandbox_id, f"connect to port {port} timed out") from None
        except OSError as exc:
            raise errors.unreachable(sandbox_id, f"port {port}: {exc.strerror or exc}") from None

    # ------------------------------------------------------------------ the two halves
    async def _forward(self, upstream: Upstream, sandbox_id: str, ticker: ActivityTicker) -> bool:
        req = self.request
        out = headers.upstream_request(req.headers, self.client.peer_ip, keep_alive=False,
                                       drop_api_key=self.hooks.authorize)
        out = [(k, v) for k, v in out if k not in _AUTH_HEADERS]  # ours alone to send
        if self.extra:  # the resolver's headers replace the client's of the same name
            names = {k for k, _ in self.extra}
            out = [(k, v) for k, v in out if k not in names] + self.extra
        if self.key is not None:
            self.nonce = secrets.token_hex(16)
            out.append((auth.NONCE_HEADER.encode(), self.nonce.encode()))
        upstream.send(h11.Request(method=req.method, target=req.target, headers=out))
        self._upload_moved = asyncio.get_running_loop().time()
        upload = asyncio.ensure_future(self._upload(upstream, ticker))
        download = asyncio.ensure_future(self._download(upstream, sandbox_id, ticker))
        try:
            await asyncio.wait((upload, download), return_when=asyncio.FIRST_COMPLETED)
            if not download.done() and not isinstance(upload.exception(), ClientGone):
                await asyncio.wait((download,))  # the agent stopped reading: its response decides
        finally:
            for task in (upload, download):
                task.cancel()
            await asyncio.gather(upload, download, return_exceptions=True)
        if download.cancelled():  # the upload saw the client go (or break the body)
            gone = upload.exception()
            assert isinstance(gone, ClientGone)
            if gone.answer is not None and self.client.can_respond():
                await self.client.send_error(gone.answer)
            raise gone
        try:
            switch = download.result()
        except errors.ProxyError as err:  # no response head came: answer for the sandbox
            await self.client.send_error(err)
            return True
        if switch is not None:
            await self._switch(upstream, switch, ticker)
            return False
        return True

    async def _upload(self, upstream: Upstream, ticker: ActivityTicker) -> None:
        try:
            while True:
                event = await self.client.next_body_event()
                if isinstance(event, h11.Data):
                    upstream.send(h11.Data(data=event.data))
                    await upstream.writer.drain()
                    self._upload_moved = asyncio.get_running_loop().time()
                    if self._head_deadline is not None:
                        self._head_deadline.reschedule(self._upload_moved + self.hooks.head_timeout)
                    ticker.tick()
                else:
                    upstream.send(h11.EndOfMessage())
                    await upstream.writer.drain()
                    break
        except (ConnectionError, OSError, h11.LocalProtocolError):
            return  # the agent stopped reading; its response (or its absence) tells the rest
        await self.client.watch()

    async def _download(
        self, upstream: Upstream, sandbox_id: str, ticker: ActivityTicker
    ) -> h11.InformationalResponse | None:
        """Relay the response; returns the agent's 101 instead if it switched protocols."""
        started = False
        try:
            while True:
                event = await (upstream.next_event() if started else self._next_head_event(upstream, sandbox_id))
                if isinstance(event, (h11.InformationalResponse, h11.Response)) and (
                    event.status_code >= 200 or event.status_code == 101
                ):
                    self._check_proof(event, sandbox_id)
                if isinstance(event, h11.InformationalResponse):
                    if event.status_code == 101:
                        return event
                    if self.client.h11.their_http_version != b"1.1":
                        continue  # HTTP/1.0 has no 1xx
                    await self.client.send(
                        h11.InformationalResponse(
                            status_code=event.status_code, headers=headers.client_response(event.headers), reason=event.reason
                        )
                    )
                elif isinstance(event, h11.Response):
                    started = True
                    out = headers.client_response(event.headers)
                    if self.client.h11.their_state is h11.SEND_BODY:  # early answer: the rest of
                        out.append((b"connection", b"close"))  # the body will not be read
                    await self.client.send(h11.Response(status_code=event.status_code, headers=out, reason=event.reason))
                elif isinstance(event, h11.Data):
                    await self.client.send(h11.Data(data=event.data))
                    ticker.tick()
                elif isinstance(event, h11.EndOfMessage):
                    await self.client.send(h11.EndOfMessage())
                    return None
                else:
                    raise ConnectionResetError("connection closed")
        except (h11.RemoteProtocolError, ConnectionError, OSError) as exc:
            if started:
                raise UpstreamBroken(f"sandbox {sandbox_id} broke off its response: {exc!r}") from None
            raise errors.bad_upstream(sandbox_id, str(exc) or type(exc).__name__) from None

    async def _next_head_event(self, upstream: Upstream, sandbox_id: str) -> Any:
        """The next event before the response head, within ``head_timeout`` of the
        request body's last progress (a slow upload is not the agent's fault: ``_upload``
        pushes the deadline on through ``self._head_deadline``)."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(self._upload_moved + self.hooks.head_timeout) as cm:
                self._head_deadline = cm  # absolute loop time, as reschedule() takes it
                return await upstream.next_event()
        except TimeoutError:
            if loop.time() < self._upload_moved + self.hooks.head_timeout:
                return await self._next_head_event(upstream, sandbox_id)  # moved meanwhile
            raise errors.ProxyError(504, "SANDBOX_TIMEOUT",
                                    f"sandbox {sandbox_id} did not answer within {self.hooks.head_timeout:g}s") from None
        finally:
            self._head_deadline = None

    def _check_proof(self, event: Any, sandbox_id: str) -> None:
        """Refuse a response head from anything but the sandbox's own agent (auth.py)."""
        if self.key is None:
            return
        got = next((v for k, v in event.headers if k == _PROOF), b"").decode("latin-1")
        if not hmac.compare_digest(got.encode("latin-1"), auth.proof(self.key, self.nonce).encode()):
            log.warning("sandbox %s: the answer on its agent port failed authentication", sandbox_id)
            raise errors.ProxyError(502, "AGENT_NOT_AUTHENTIC",
                                    f"sandbox {sandbox_id}: the program answering on the agent's port "
                                    "is not the sandbox's agent (authentication failed)")

    async def _switch(self, upstream: Upstream, response: h11.InformationalResponse, ticker: ActivityTicker) -> None:
        """Relay the 101, hand over bytes read ahead on either side, then splice raw."""
        self.client.consume_buffered_body()
        await self.client.send(
            h11.InformationalResponse(
                status_code=101, headers=headers.client_response(response.headers, switching=True), reason=response.reason
            )
        )
        client_ahead, _ = self.client.h11.trailing_data
        upstream_ahead, _ = upstream.h11.trailing_data
        if client_ahead:
            upstream.writer.write(client_ahead)
        if upstream_ahead:
            self.client.writer.write(upstream_ahead)
        await splice((self.client.reader, self.client.writer), (upstream.reader, upstream.writer), ticker)
