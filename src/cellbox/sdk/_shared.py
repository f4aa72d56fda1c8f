"""Everything the SDK does that needs no I/O, shared by the async and the sync clients.

URL and header rules (spec §1.3-§1.4), request bodies, the SSE decoder, folding
``/processes/run`` events into a :class:`CommandResult`, and the PTY frame format
(spec §3.3). Keeping this out of ``_async/`` keeps the generated ``_sync/`` small
and lets it be unit-tested without a server.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from ..credentials import find_api_key
from ..errors import InvalidRequest
from ._errors import SandboxStartError
from ._models import CommandResult, OutputLine

DEFAULT_API_URL = "http://localhost:8900"
USER_AGENT = "cellbox-python-sdk"
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})
AGENT_PORT = 9501
# States from which a sandbox will never become running.
FINAL_STATES = frozenset({"failed", "terminated"})
CHUNK = 1 << 20
DEFAULT_CPUS = 1.0
DEFAULT_MEMORY_MB = 1024
SNAPSHOT_TYPES = ("filesystem", "memory")
# The longest a suspend/resume request asks the server to hold it (spec §2.5).
MAX_WAIT_MS = 30_000


@dataclass(frozen=True)
class Config:
    """Where the lifecycle API is and how to authenticate; resolved once per client."""

    api_url: str
    api_key: str | None = None
    timeout: float = 60.0

    @classmethod
    def resolve(cls, api_url: str | None = None, api_key: str | None = None, timeout: float | None = None) -> Config:
        url = api_url or os.environ.get("CELLBOX_API_URL") or DEFAULT_API_URL
        key = find_api_key(api_key)  # argument, env vars, login file, admin.key (cellbox.credentials)
        return cls(url.rstrip("/"), key, 60.0 if timeout is None else timeout)

    def headers(self) -> dict[str, str]:
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers


@dataclass(frozen=True)
class ProxyTarget:
    """Where a sandbox's agent is reached: a base URL plus the routing headers."""

    base_url: str
    headers: dict[str, str]

    @property
    def host_header(self) -> str:
        return self.headers.get("Host") or urlsplit(self.base_url).netloc

    def address(self) -> tuple[str, int, bool]:
        """``(host, port, tls)`` to open a raw connection to (for WebSockets)."""
        parts = urlsplit(self.base_url)
        tls = parts.scheme == "https"
        return parts.hostname or "localhost", parts.port or (443 if tls else 80), tls


def proxy_target(sandbox_id: str, sandbox_url: str | None, routing_hint: str | None = None,
                 api_key: str | None = None) -> ProxyTarget:
    """Spec §1.4: localhost proxies route on ``Host: {id}.local``, others on a header.

    The API key rides in the routing headers too: WebSocket handshakes (PTYs, tunnels)
    are raw connections that never see the HTTP client's default headers."""
    url = sandbox_url or os.environ.get("CELLBOX_SANDBOX_PROXY_URL")
    if not url:
        raise SandboxStartError(f"sandbox {sandbox_id} has no sandbox_url: it is not routable (is it running?)")
    parts = urlsplit(url)
    base = f"{parts.scheme}://{parts.netloc}"
    headers: dict[str, str] = {}
    if (parts.hostname or "") in LOCAL_HOSTS:
        headers["Host"] = f"{sandbox_id}.local"
    else:
        headers["X-Tensorlake-Sandbox-Id"] = sandbox_id
    if routing_hint:
        headers["X-Tensorlake-Route-Hint"] = routing_hint
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return ProxyTarget(base, headers)


def drop_none(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if v is not None}


def network_body(
    allow_internet_access: bool = True, allow_out: Sequence[str] | None = None, deny_out: Sequence[str] | None = None
) -> dict[str, Any]:
    """An egress policy (spec §2.4): entries are IPs, CIDRs or host names; deny beats allow."""
    return {
        "allow_internet_access": allow_internet_access,
        "allow_out": list(allow_out or []),
        "deny_out": list(deny_out or []),
    }


class _Keep:
    """The default of ``update(network=...)``: leave the policy as it is (None clears it)."""

    def __repr__(self) -> str:
        return "KEEP"


KEEP: Any = _Keep()


def create_body(
    *,
    image: str | None,
    cpus: float | None,
    memory_mb: int | None,
    disk_mb: int | None,
    timeout_secs: int | None,
    name: str | None,
    entrypoint: Sequence[str] | None,
    exposed_ports: Iterable[int] | None,
    allow_unauthenticated_access: bool | None,
    allow_internet_access: bool,
    allow_out: Sequence[str] | None,
    deny_out: Sequence[str] | None,
    snapshot_id: str | None,
    wait: bool,
    secret_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The ``POST /sandboxes`` body (spec §2.1): false/None fields are omitted.

    ``cpus``/``memory_mb`` of None mean 1.0 / 1024 for a fresh sandbox and, with a
    ``snapshot_id``, "the snapshot's" (they are then omitted, as Tensorlake's SDK does).
    """
    if not snapshot_id:
        cpus = DEFAULT_CPUS if cpus is None else cpus
        memory_mb = DEFAULT_MEMORY_MB if memory_mb is None else memory_mb
    body: dict[str, Any] = {}
    if image:
        body["image"] = image
    resources = drop_none({"cpus": None if cpus is None else float(cpus), "memory_mb": memory_mb, "disk_mb": disk_mb})
    if resources:
        body["resources"] = resources
    if timeout_secs is not None:
        body["timeout_secs"] = int(timeout_secs)
    if entrypoint:
        body["entrypoint"] = list(entrypoint)
    if not allow_internet_access or allow_out or deny_out:
        body["network"] = network_body(allow_internet_access, allow_out, deny_out)
    if snapshot_id:
        body["snapshot_id"] = snapshot_id
    if secret_names:
        body["secret_names"] = list(secret_names)
    if name:
        body["name"] = name
    if allow_unauthenticated_access:
        body["allow_unauthenticated_access"] = True
    if exposed_ports:
        body["exposed_ports"] = normalize_ports(exposed_ports)
    if not wait:
        body["wait"] = False
    return body


def normalize_ports(ports: Iterable[int]) -> list[int]:
    """Deduplicated, sorted user ports; 9501 (the agent) and out-of-range ports are refused."""
    out = set()
    for port in ports:
        port = int(port)
        if not 1 <= port <= 65535 or port == AGENT_PORT:
            raise InvalidRequest(f"invalid port {port}: must be 1-65535 and not {AGENT_PORT}")
        out.add(port)
    return sorted(out)


def startup_failure(info: Mapping[str, Any]) -> SandboxStartError:
    sid = info.get("id") or info.get("sandbox_id")
    status = info.get("status") or info.get("state")
    reason = info.get("termination_reason") or info.get("reason") or "unknown reason"
    details = info.get("error_details")
    message = details.get("message") if isinstance(details, dict) else details
    text = f"sandbox {sid} became {status} during startup ({reason})"
    return SandboxStartError(f"{text}: {message}" if message else text)


def process_ref(pid_or_name: int | str) -> str:
    """A PID, or a managed process name percent-encoded as one path segment."""
    return str(pid_or_name) if isinstance(pid_or_name, int) else quote(str(pid_or_name), safe="")


def pty_session_ref(session_id: str) -> str:
    """A PTY session ID as one path segment (a caller's string must not add segments)."""
    if not session_id or session_id in (".", ".."):
        raise InvalidRequest("PTY session ID must not be empty")
    return quote(str(session_id), safe="")


def command_argv(command: str | Sequence[str], args: Sequence[str] | None) -> tuple[str, list[str]]:
    """``run("ls", ["-l"])`` and ``run(["ls", "-l"])`` both mean program ``ls`` with ``-l``."""
    if isinstance(command, str):
        return command, [str(a) for a in args or []]
    argv = [str(a) for a in command]
    if not argv:
        raise InvalidRequest("command must not be empty")
    return argv[0], argv[1:] + [str(a) for a in args or []]


def process_body(
    command: str | Sequence[str],
    args: Sequence[str] | None,
    env: Mapping[str, str] | None,
    working_dir: str | None,
    user: str | None,
    **extra: Any,
) -> dict[str, Any]:
    cmd, argv = command_argv(command, args)
    body: dict[str, Any] = {"command": cmd, "args": argv}
    if env:
        body["env"] = {str(k): str(v) for k, v in env.items()}
    body.update(drop_none({"working_dir": working_dir, "user": user, **extra}))
    return body


class SSEDecoder:
    """Incremental ``text/event-stream`` parser: feed lines, get ``(event, data)`` pairs.

    ``data`` is the JSON-decoded payload, or the raw string when it is not JSON. Comment
    lines (``: ping``) and events without data are skipped.
    """

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []

    def feed(self, line: str) -> tuple[str, Any] | None:
        line = line.rstrip("\r\n")
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        return None

    def flush(self) -> tuple[str, Any] | None:
        return self._dispatch()

    def _dispatch(self) -> tuple[str, Any] | None:
        if not self._data:
            self._event = ""
            return None
        payload = "\n".join(self._data)
        event = self._event or "message"
        self._event, self._data = "", []
        try:
            return event, json.loads(payload)
        except ValueError:
            return event, payload


def output_line(data: Any) -> OutputLine | None:
    """The output line carried by an SSE payload, or None for anything else (eof, pings)."""
    if isinstance(data, dict) and isinstance(data.get("line"), str):
        ts = data.get("timestamp")
        return OutputLine(data["line"], str(data.get("stream") or "stdout"), ts if isinstance(ts, int) else None)
    return None


class RunFolder:
    """Folds ``/processes/run`` events (spec §3.2) into a :class:`CommandResult`."""

    def __init__(self) -> None:
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self.pid: int | None = None
        self.final: dict[str, Any] | None = None

    def feed(self, data: Any) -> OutputLine | None:
        """Record one event; return it as an :class:`OutputLine` when it is one."""
        if not isinstance(data, dict):
            return None
        kind = data.get("type") or data.get("event") or data.get("kind")
        if kind in ("heartbeat", "keepalive"):
            return None
        line = output_line(data)
        if line is not None:
            (self.stderr if line.stream == "stderr" else self.stdout).append(line.line)
            return line
        if "pid" in data and self.pid is None and isinstance(data["pid"], int):
            self.pid = data["pid"]
        if data.get("exit_code") is not None or data.get("signal") is not None:
            self.final = data
        return None

    def result(self) -> CommandResult | None:
        final = self.final
        if final is None:
            return None
        signal = final.get("signal")
        exit_code = final.get("exit_code")
        if exit_code is None:
            exit_code = -int(signal or 0)
        return CommandResult(
            exit_code=int(exit_code),
            stdout="\n".join(self.stdout),
            stderr="\n".join(self.stderr),
            signal=int(signal) if signal is not None else None,
            timed_out=final.get("reason") == "timed_out",
            oom_killed=bool(final.get("oom_killed")) or final.get("reason") == "oom_killed",
            pid=self.pid,
        )


# PTY WebSocket frames (spec §3.3): first byte is the opcode.
PTY_DATA = 0x00
PTY_RESIZE = 0x01
PTY_READY = 0x02
PTY_EXIT = 0x03


def pty_input(data: bytes) -> bytes:
    return bytes([PTY_DATA]) + data


def pty_resize(rows: int, cols: int) -> bytes:
    return bytes([PTY_RESIZE]) + struct.pack(">HH", cols, rows)


def pty_ready() -> bytes:
    return bytes([PTY_READY])


def pty_decode(frame: bytes) -> tuple[int, bytes | int]:
    """``(PTY_DATA, output bytes)`` or ``(PTY_EXIT, exit code)``; other opcodes pass through."""
    if not frame:
        return PTY_DATA, b""
    op = frame[0]
    if op == PTY_EXIT and len(frame) >= 5:
        return PTY_EXIT, struct.unpack(">i", frame[1:5])[0]
    return op, frame[1:]


def exit_code_from_close_reason(reason: str | None) -> int | None:
    if reason and reason.startswith("exit:"):
        try:
            return int(reason[5:])
        except ValueError:
            return None
    return None
