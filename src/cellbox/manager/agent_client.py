"""The host's calls to a sandbox's agent: authenticated, bounded, and timed out.

Everything an agent answers is untrusted input: the tenant owns PID 1 and can replace
the agent with any program (``agent/auth.py`` says how the host still tells the real
agent apart). So each call here

* sends a fresh nonce and refuses an answer without the right proof (``AgentError``,
  502-class: "the sandbox's agent failed authentication");
* has one deadline for the whole exchange (``asyncio.timeout``, not httpx's per-read
  timeout, which a slowloris agent dribbling a byte every few seconds never trips);
* reads at most ``max_bytes`` of body (httpx's own parser, h11, bounds the head), and
  parses JSON only from that;
* never raises anything but ``AgentError`` for what the agent did.

The agent's key lives in the sandbox's record (``extra["agent_key"]``, hex; never
rendered by the API) and in the bundle's ``config.json`` (0600), whose environment
the agent is started with.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import secrets
import time
from pathlib import Path
from typing import Any, AsyncIterator

import httpx

from .. import _procfs
from ..agent import auth
from ..errors import (AgentError, AgentNotAuthentic, AgentResponseTooLarge, AgentTimeout, AgentUnreachable,
                      InternalFailure)

KEY_FIELD = "agent_key"
DEFAULT_TIMEOUT = 10.0
PARSE_INLINE = 64 << 10
MAX_JSON = 8 << 20
MAX_EVENT = 1 << 20  # one SSE line (an output line is at most 64 KiB of text, JSON-escaped)  # process lists and outputs the host parses (the agent keeps ≤ 1/8 of memory)


# The agent's errors live with the others (cellbox/errors.py); re-exported here, where
# every caller of the agent already looks for them.
__all__ = ["AgentError", "AgentClient", "key_of", "new_key", "env_key", "set_env_key", "parse_json"]


def new_key() -> str:
    """A fresh 32-byte agent secret, hex."""
    return secrets.token_hex(32)


def new_nonce() -> str:
    return secrets.token_hex(16)


def key_of(rec: Any) -> bytes | None:
    """The agent key of a sandbox record (None for sandboxes made before keys existed)."""
    raw = rec.extra.get(KEY_FIELD) if rec is not None else None
    try:
        return bytes.fromhex(raw) if raw else None
    except ValueError:
        return None


def verify(key: bytes | None, nonce: str, headers: Any) -> bool:
    """Does a response head carry the agent's proof for ``nonce``? (No key: nothing to check.)"""
    if key is None:
        return True
    got = headers.get(auth.PROOF_HEADER)
    if isinstance(got, bytes):
        got = got.decode("latin-1")
    return isinstance(got, str) and hmac.compare_digest(got.encode("latin-1", "replace"), auth.proof(key, nonce).encode())


def env_key(cfg: dict[str, Any]) -> str | None:
    """The agent secret in a bundle config's environment."""
    prefix = auth.SECRET_ENV + "="
    for item in cfg.get("process", {}).get("env", []):
        if item.startswith(prefix):
            return item[len(prefix):] or None
    return None


def set_env_key(cfg: dict[str, Any], key: str) -> None:
    """Put ``key`` into a bundle config's environment (replacing any earlier one)."""
    prefix = auth.SECRET_ENV + "="
    env = [item for item in cfg["process"].get("env", []) if not item.startswith(prefix)]
    cfg["process"]["env"] = env + [prefix + key]


class AgentClient:
    """One shared httpx client; each call authenticated and bounded as above."""

    def __init__(self) -> None:
        self._http: httpx.AsyncClient | None = None

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            # Per-phase timeouts stay as a backstop; the real bound is the deadline below.
            # No kept-alive connections: an address outlives its sandbox (the next one
            # gets it), and a pooled connection to the old agent whose FIN never came
            # back (a tenant that forged its MAC, a CRIU network lock) was reused for
            # the new one and reset (tests/security/test_network_walls.py, ARP claim
            # after a forged MAC). These calls are few; a handshake on the bridge is
            # ~0.1 ms.
            self._http = httpx.AsyncClient(timeout=DEFAULT_TIMEOUT,
                                           limits=httpx.Limits(max_keepalive_connections=0))
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def wait_ready(self, ip: str, port: int, key: bytes | None, *, init_pid: int | None,
                         log_path: Path, timeout: float) -> None:
        """Poll the agent's port until it accepts, then check it is our agent (its proof
        under ``key``; None: a sandbox from before agent keys); fail fast if the
        container's init (``init_pid``) died. ``log_path``'s tail explains a failure."""
        deadline = time.monotonic() + timeout
        delay = 0.002
        while True:
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(ip, port), 0.5)
                writer.close()
                break
            except (OSError, asyncio.TimeoutError):
                pass
            if init_pid and not _procfs.alive(init_pid):
                raise InternalFailure(f"the sandbox agent exited during start-up: {_tail(log_path)}")
            if time.monotonic() > deadline:
                raise InternalFailure(f"the sandbox agent did not start within {timeout:.0f}s: {_tail(log_path)}")
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.02)
        # The port accepts: now make sure it is our agent that answers there, not a
        # program the tenant (or a restored image) put in its place.
        if key is not None:
            left = max(1.0, deadline - time.monotonic())
            status, _ = await self.call(ip, port, key, "GET", "/api/v1/health", timeout=left, max_bytes=4096)
            if status != 200:
                raise AgentError(f"the sandbox's agent answered {status} to its health check")

    async def call(self, ip: str, port: int, key: bytes | None, method: str, path: str, *,
                   json_body: Any = None, headers: dict[str, str] | None = None,
                   timeout: float = DEFAULT_TIMEOUT, max_bytes: int = MAX_JSON,
                   proof_key: bytes | None = None, content: bytes | None = None) -> tuple[int, bytes]:
        """Status and body (≤ ``max_bytes``) of one call; ``AgentError`` for anything else.

        ``proof_key`` (default ``key``) is the key the answer must be proved with: a
        rotation is answered under the new key.
        """
        hdrs = {auth.NONCE_HEADER: new_nonce(), **(headers or {})}
        nonce = hdrs[auth.NONCE_HEADER]  # a rotation brings its own
        check = proof_key if proof_key is not None else key
        try:
            async with asyncio.timeout(timeout):
                async with self._client().stream(method, f"http://{ip}:{port}{path}", json=json_body,
                                                 content=content, headers=hdrs) as resp:  # content: ui/files.py
                    if not verify(check, nonce, resp.headers):
                        raise AgentNotAuthentic("the sandbox's agent failed authentication (is something else "
                                                "answering on its port?)")
                    body = bytearray()
                    async for chunk in resp.aiter_raw():
                        body += chunk
                        if len(body) > max_bytes:
                            raise AgentResponseTooLarge("a response", max_bytes)
                    return resp.status_code, bytes(body)
        except TimeoutError:
            raise AgentTimeout("answer", timeout) from None
        except httpx.HTTPError as exc:
            raise AgentUnreachable(exc) from None

    async def get_json(self, ip: str, port: int, key: bytes | None, path: str, *,
                       timeout: float = DEFAULT_TIMEOUT, max_bytes: int = MAX_JSON) -> Any:
        status, body = await self.call(ip, port, key, "GET", path, timeout=timeout, max_bytes=max_bytes)
        if status != 200:
            raise AgentError(f"the sandbox's agent answered {status} to GET {path}")
        if len(body) > PARSE_INLINE:  # a big document is parsed off the event loop
            return await asyncio.to_thread(parse_json, body)
        return parse_json(body)

    async def sse_data(self, ip: str, port: int, key: bytes | None, path: str, *, json_body: Any,
                       timeout: float, max_event: int = MAX_EVENT) -> AsyncIterator[Any]:
        """The parsed ``data:`` lines of an SSE answer, each at most ``max_event`` bytes,
        all within ``timeout``; ``AgentError`` for a bad head, an oversized line, bad JSON."""
        nonce = new_nonce()
        try:
            async with asyncio.timeout(timeout):
                async with self._client().stream("POST", f"http://{ip}:{port}{path}", json=json_body,
                                                 headers={auth.NONCE_HEADER: nonce,
                                                          "Accept": "text/event-stream"}) as resp:
                    if not verify(key, nonce, resp.headers):
                        raise AgentNotAuthentic("the sandbox's agent failed authentication")
                    if resp.status_code != 200:
                        raise AgentError(f"the sandbox's agent answered {resp.status_code} to POST {path}")
                    pending = bytearray()
                    async for chunk in resp.aiter_raw():
                        pending += chunk
                        while (nl := pending.find(b"\n")) >= 0:
                            line = bytes(pending[:nl]).rstrip(b"\r")
                            del pending[: nl + 1]
                            if line.startswith(b"data:"):
                                yield parse_json(line[5:])
                        if len(pending) > max_event:
                            raise AgentResponseTooLarge("an event", max_event)
        except TimeoutError:
            raise AgentTimeout("finish", timeout) from None
        except httpx.HTTPError as exc:
            raise AgentUnreachable(exc) from None

    async def rotate(self, ip: str, port: int, old: bytes) -> str:
        """Replace a restored agent's secret (derived on both sides, never sent); the new key."""
        nonce = new_nonce()
        new = auth.derive(old, nonce)
        status, _ = await self.call(
            ip, port, old, "POST", auth.ROTATE_PATH, proof_key=new,
            headers={auth.NONCE_HEADER: nonce, auth.ROTATE_HEADER: auth.rotate_tag(old, nonce)},
        )
        if status != 204:
            raise AgentNotAuthentic(f"the sandbox's agent refused to rotate its key ({status})")
        return new.hex()


def parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise AgentError(f"the sandbox's agent sent malformed JSON: {exc}") from None


def _tail(path: Path, limit: int = 1500) -> str:
    try:
        return path.read_text(errors="replace")[-limit:].strip() or "(no output)"
    except FileNotFoundError:
        return "(no log)"
