"""Wires the agent together and runs it until SIGTERM.

Also the PID 1 plumbing: SIGCHLD -> ``ProcessManager.reap`` via
``loop.add_signal_handler`` (so the handler runs on the loop, never
re-entrantly), and SIGTERM/SIGINT handlers -- the kernel drops signals that
PID 1 has no handler for, so without them ``docker stop``-style shutdown would
always end in SIGKILL.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time

from . import __version__, hardening
from .auth import ROTATE_HEADER, ROTATE_PATH, NONCE_HEADER, AgentSecret
from .budget import OutputBudget
from .errors import APIError
from .config import Config
from .env_api import EnvAPI
from .files import FileRoot
from .files_api import FileAPI
from .oom import OomCounter
from .journal_api import JournalAPI
from .proc_api import ProcessAPI
from .processes import ProcessManager
from .routes import Lazy, Router
from .server import HTTPConnection, Request, Response, empty_response, json_response
from .util import log

REAP_SAFETY_INTERVAL = 10.0

# Routes whose modules are imported on their first request (routes.Lazy): PTY
# and tunnels pull in wsproto/termios/hmac, which sandbox start-up never needs.
PTY_ROUTES = (
    ("POST", "/api/v1/pty", "create"),
    ("GET", "/api/v1/pty", "list"),
    ("GET", "/api/v1/pty/{sid}", "get"),
    ("DELETE", "/api/v1/pty/{sid}", "delete"),
    ("POST", "/api/v1/pty/{sid}/resize", "resize"),
    ("GET", "/api/v1/pty/{sid}/ws", "attach"),
)
TUNNEL_ROUTES = (("GET", "/api/v1/tunnels/tcp", "tcp"),)


class InfoAPI:
    def __init__(self, manager: ProcessManager) -> None:
        self.pm = manager
        self.started = time.monotonic()

    def register(self, router: Router) -> None:
        router.add("GET", "/api/v1/health", self.health)
        router.add("GET", "/api/v1/info", self.info)

    async def health(self, request: Request) -> Response:
        return json_response({"healthy": True})

    async def info(self, request: Request) -> Response:
        running, total = self.pm.counts()
        return json_response(
            {
                "version": __version__,
                "uptime_secs": int(time.monotonic() - self.started),
                "running_processes": running,
                "total_processes": total,
            }
        )


class RotateAPI:
    """``POST /_cellbox/v1/rotate``: the host replaces a restored agent's secret (auth.py)."""

    def __init__(self, secret: AgentSecret) -> None:
        self.secret = secret

    def register(self, router: Router) -> None:
        router.add("POST", ROTATE_PATH, self.rotate)

    async def rotate(self, request: Request) -> Response:
        if not self.secret.rotate(request.headers.get(NONCE_HEADER), request.headers.get(ROTATE_HEADER)):
            raise APIError(403, "FORBIDDEN", "rotation not authenticated")
        hardening.protect()  # a restore brings the flags back as dumped; make sure
        return empty_response(204)


def become_subreaper() -> bool:
    """prctl(PR_SET_CHILD_SUBREAPER): adopt orphans of our descendants."""
    import ctypes  # lazy: only with --subreaper

    libc = ctypes.CDLL(None, use_errno=True)
    return bool(libc.prctl(36, 1, 0, 0, 0) == 0)


async def serve(cfg: Config, listen_fd: int, t0: float) -> int:
    loop = asyncio.get_running_loop()
    secret = AgentSecret.from_environ()  # out of os.environ before any child is spawned
    if not hardening.protect():  # before any request can start a tenant process
        log("warning: could not close the agent to the tenant's ptrace")
    sock = socket.socket(fileno=listen_fd)
    pm = ProcessManager(
        oom=OomCounter(cfg.oom_counters),
        default_workdir=cfg.default_workdir,
        inherit_env=cfg.inherit_env,
        max_lines=cfg.max_output_lines,
        max_bytes=cfg.max_output_bytes,
        max_finished=cfg.max_finished,
        drain_grace=cfg.drain_grace,
        budget=OutputBudget(cfg.max_output_total),
    )
    router = Router()
    InfoAPI(pm).register(router)
    RotateAPI(secret).register(router)
    proc_api = ProcessAPI(pm, cfg.keepalive)
    proc_api.register(router)
    JournalAPI(pm.journal).register(router)  # the host's log collector (issue 14)
    FileAPI(FileRoot(cfg.root)).register(router)
    EnvAPI().register(router)

    def build_pty_api() -> object:
        from .pty_api import PtyAPI
        from .ptys import PtyManager

        return PtyAPI(PtyManager(pm, cfg.drain_grace))

    def build_tunnel_api() -> object:
        from .tunnels import TunnelAPI

        return TunnelAPI()

    pty_api = Lazy(build_pty_api)
    tunnel_api = Lazy(build_tunnel_api)
    for lazy, table in ((pty_api, PTY_ROUTES), (tunnel_api, TUNNEL_ROUTES)):
        for method, path, name in table:
            router.add(method, path, lazy.handler(name))

    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGCHLD, pm.reap)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    if cfg.subreaper and not become_subreaper():
        log("warning: could not become a child subreaper")
    pm.reap()  # children that exited before the handler existed

    def safety_reap() -> None:
        pm.reap()
        loop.call_later(REAP_SAFETY_INTERVAL, safety_reap)

    loop.call_later(REAP_SAFETY_INTERVAL, safety_reap)

    connections: set[asyncio.Task[None]] = set()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        connections.add(task)
        try:
            await HTTPConnection(reader, writer, router.dispatch, secret).serve()
        finally:
            connections.discard(task)

    server = await asyncio.start_server(on_client, sock=sock, backlog=1024)
    host, port = sock.getsockname()[:2]
    ready_ms = (time.perf_counter() - t0) * 1000
    log(f"listening on {host}:{port} pid={os.getpid()} ready_in={ready_ms:.1f}ms")

    await stop.wait()
    log("shutting down")
    server.close()
    proc_api.shutdown()  # no managed restarts from here on
    for task in list(connections):
        task.cancel()
    if pty_api.obj is not None:
        await asyncio.gather(pm.shutdown(cfg.shutdown_grace), pty_api.obj.ptys.shutdown(cfg.shutdown_grace))
    else:
        await pm.shutdown(cfg.shutdown_grace)
    return 0
