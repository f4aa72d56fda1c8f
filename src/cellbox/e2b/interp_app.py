"""e2b-code-interpreter's server (port 49999 of a sandbox), served by the proxy.

E2B runs a Jupyter server in its code-interpreter template; cellbox serves the same
HTTP API host-side (like envd: ``proxy/local_app.py``) and keeps the interpreter state
inside the sandbox: a kernel process per context (``interp_kernel.py``), started and
reached through the agent's ``/processes/run``. Routes, as the SDK calls them:

POST   /execute                  {code, context_id?, language?, env_vars?} -> JSON lines
POST   /contexts                 {language?, cwd?} -> {id, language, cwd}
GET    /contexts                 -> [{id, language, cwd}]
DELETE /contexts/{id}            POST /contexts/{id}/restart

Python only (``language`` "python" or none); others are a 400 naming the language.
Auth: the sandbox's traffic token (``E2B-Traffic-Access-Token``, what the SDK sends)
or its envd token (``X-Access-Token``). Every frame from the sandbox is checked
(``interp_frames.py``); a broken kernel is the execution's error, never a 500.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..errors import CellboxError
from ..proxy import routing
from ..proxy.errors import ProxyError
from . import link
from .context import Env, EnvdDenied, TOKEN_HEADER
from .interp_frames import CONTEXT_ID, BadFrame, Frames, kernel_error
from .interp_kernel_src import SOURCE

INTERP_PORT = 49999
TRAFFIC_HEADER = "e2b-traffic-access-token"
RUN = "/api/v1/processes/run"
MAX_REQUEST = 2 << 20
MAX_CODE = 1 << 20  # the code travels as arguments (≤ 2 MiB in all on Linux)
ARG_CHARS = 30_000  # one argument ≤ 128 KiB: 30k characters are ≤ 120 KB of UTF-8
MAX_CONTEXTS = 1000
_STATUS = {"CONTEXT_NOT_FOUND": 404, "BAD_CWD": 400}


def _deny(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "code": code}, status_code=status)


class Interp:
    def __init__(self, env: Env) -> None:
        self.env = env

    def sandbox_of(self, request: Request) -> str:
        """The sandbox a request is for, with its traffic or envd token checked."""
        raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in request.headers.items()]
        try:
            target = routing.target_of(raw, self.env.domain)
        except ProxyError as exc:
            raise EnvdDenied(400, exc.code, exc.message) from None
        tokens = self.env.tokens
        if not (tokens.check(target.ref, request.headers.get(TOKEN_HEADER))
                or tokens.check(f"traffic:{target.ref}", request.headers.get(TRAFFIC_HEADER))):
            raise EnvdDenied(401, "INVALID_ACCESS_TOKEN",
                             "missing or wrong E2B-Traffic-Access-Token (or X-Access-Token) for this sandbox")
        return target.ref

    async def agent(self, request: Request) -> link.Agent:
        return await link.locate(self.env.service, self.sandbox_of(request))


def _chunks(code: str) -> list[str]:
    return [code[i:i + ARG_CHARS] for i in range(0, len(code), ARG_CHARS)] or [""]


async def frames(agent: link.Agent, args: list[str]) -> AsyncIterator[dict[str, Any]]:
    """Run the kernel program in the sandbox with ``args``; its checked frames."""
    # -S: no site import in the short-lived client (~1/3 of its start); the kernel
    # it forks imports site itself, so the tenant's installed packages import.
    body = {"command": "python3", "args": ["-S", "-c", SOURCE, *args], "env": dict(agent.env)}
    parser, stderr = Frames(), ""
    async for ev in agent.events("POST", RUN, body):
        line = ev.get("line")
        if isinstance(line, str):
            if ev.get("stream") == "stderr":
                stderr = (stderr + line + "\n")[-2000:]
            elif (frame := parser.feed(line)) is not None:
                yield frame
        elif "exit_code" in ev or "signal" in ev:
            if stderr:
                raise BadFrame(f"the sandbox's kernel failed: {stderr.strip()}")
            return


def _error_response(frame: dict[str, Any]) -> JSONResponse:
    code = str(frame.get("code", "KERNEL_ERROR"))
    return _deny(_STATUS.get(code, 502), code, str(frame.get("value", "the sandbox's kernel failed")))


async def _just(frame: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
    yield frame if frame.get("type") == "cbx_error" else {"type": "cbx_error", "value": "the kernel refused the code"}


async def _collect(gen: AsyncIterator[dict[str, Any]]) -> list[dict[str, Any]]:
    """All frames of a short answer (contexts), at most ``MAX_CONTEXTS``: a kernel that
    floods is a protocol error, not host memory."""
    got: list[dict[str, Any]] = []
    try:
        async for frame in gen:
            got.append(frame)
            if len(got) > MAX_CONTEXTS:
                raise BadFrame(f"the sandbox's kernel sent over {MAX_CONTEXTS} frames for one answer")
    finally:
        await gen.aclose()  # type: ignore[attr-defined]
    return got


async def _first(gen: AsyncIterator[dict[str, Any]]) -> dict[str, Any] | None:
    async for frame in gen:
        return frame
    return None


def _body_error(exc: Exception) -> JSONResponse:
    if isinstance(exc, BadFrame):
        return _deny(502, "KERNEL_PROTOCOL", str(exc))
    assert isinstance(exc, CellboxError)
    return _deny(getattr(exc, "status", 500), exc.code, exc.message)


async def _json(request: Request) -> dict[str, Any]:
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_REQUEST:
            raise EnvdDenied(413, "REQUEST_TOO_LARGE", f"request body over {MAX_REQUEST} bytes")
    try:
        doc = json.loads(raw) if raw.strip() else {}
    except ValueError as exc:
        raise EnvdDenied(400, "INVALID_JSON", f"request body is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise EnvdDenied(400, "INVALID_JSON", "request body must be a JSON object")
    return doc


def _language(doc: dict[str, Any]) -> None:
    lang = doc.get("language")
    if lang is not None and lang != "python":
        raise EnvdDenied(400, "LANGUAGE_NOT_SUPPORTED",
                         f"language {str(lang)[:40]!r} is not supported by cellbox's code interpreter (python only)")


def _opt_str(doc: dict[str, Any], key: str, limit: int) -> str:
    value = doc.get(key)
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > limit or "\x00" in value:
        raise EnvdDenied(400, "INVALID_ARGUMENT", f"{key}: a string of at most {limit} characters, no NUL")
    return value


def _exec_args(doc: dict[str, Any]) -> list[str]:
    code = doc.get("code")
    if not isinstance(code, str):
        raise EnvdDenied(400, "INVALID_ARGUMENT", "code: a string is required")
    if "\x00" in code or len(code.encode()) > MAX_CODE:
        raise EnvdDenied(400, "INVALID_ARGUMENT", f"code: at most {MAX_CODE} bytes of UTF-8, no NUL character")
    if doc.get("context_id") is not None and doc.get("language") is not None:
        raise EnvdDenied(400, "INVALID_ARGUMENT", "give context_id or language, not both")
    _language(doc)
    ctx = _opt_str(doc, "context_id", 64) or "default-python"
    if not CONTEXT_ID.fullmatch(ctx):
        raise EnvdDenied(400, "INVALID_ARGUMENT", "context_id: lower-case letters, digits and '-'")
    envs = doc.get("env_vars") or {}
    if not isinstance(envs, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in envs.items()):
        raise EnvdDenied(400, "INVALID_ARGUMENT", "env_vars: an object of strings")
    packed = json.dumps(envs)
    if len(packed) > 64 << 10 or "\\u0000" in packed:
        raise EnvdDenied(400, "INVALID_ARGUMENT", "env_vars: at most 64 KiB, no NUL character")
    return ["exec", ctx, "", packed, *_chunks(code)]


async def _lines(gen: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    """The execution's frames as the SDK reads them: one JSON object per line."""
    try:
        async for frame in gen:
            kind = frame["type"]
            if kind == "cbx_done":
                return
            if kind == "cbx_error":
                yield (json.dumps(kernel_error(frame["value"])) + "\n").encode()
                return
            if not kind.startswith("cbx_"):
                yield (json.dumps(frame) + "\n").encode()
        yield (json.dumps(kernel_error("the sandbox's kernel ended without finishing the execution")) + "\n").encode()
    except BadFrame as exc:
        yield (json.dumps(kernel_error(str(exc))) + "\n").encode()
    except CellboxError as exc:
        yield (json.dumps(kernel_error(f"{exc.code}: {exc.message}")) + "\n").encode()
    finally:
        await gen.aclose()  # type: ignore[attr-defined]


async def _guarded(request: Request, work: Any) -> Response:
    """Auth, then ``work(agent)``; our errors and a broken kernel as JSON answers."""
    interp: Interp = request.app.state.interp
    try:
        return await work(await interp.agent(request))  # type: ignore[no-any-return]
    except (BadFrame, CellboxError) as exc:
        return _body_error(exc)


async def execute(request: Request) -> Response:
    async def work(agent: link.Agent) -> Response:
        gen = frames(agent, _exec_args(await _json(request)))
        try:
            first = await _first(gen)
        except BadFrame as exc:  # a broken kernel is the execution's error, as mid-stream
            first = {"type": "cbx_error", "code": "KERNEL_PROTOCOL", "value": str(exc)}
        if first is None or first["type"] != "cbx_accepted":
            await gen.aclose()  # type: ignore[attr-defined]
            first = first or {"type": "cbx_error", "value": "the sandbox's kernel sent nothing"}
            if first.get("code") in _STATUS:  # the caller's mistake: an HTTP error
                return _error_response(first)
            return StreamingResponse(_lines(_just(first)), media_type="application/x-ndjson")
        return StreamingResponse(_lines(gen), media_type="application/x-ndjson")

    return await _guarded(request, work)


async def create(request: Request) -> Response:
    async def work(agent: link.Agent) -> Response:
        doc = await _json(request)
        _language(doc)
        ctx = secrets.token_hex(8)
        got = await _collect(frames(agent, ["create", ctx, _opt_str(doc, "cwd", 4096)]))
        made = next((f for f in got if f["type"] == "cbx_context"), None)
        if made is None:
            return _error_response(next((f for f in got if f["type"] == "cbx_error"), {}))
        return JSONResponse({"id": made["id"], "language": made["language"], "cwd": made["cwd"]})

    return await _guarded(request, work)


async def listing(request: Request) -> Response:
    async def work(agent: link.Agent) -> Response:
        got = await _collect(frames(agent, ["list"]))
        return JSONResponse([{"id": f["id"], "language": f["language"], "cwd": f["cwd"]}
                             for f in got if f["type"] == "cbx_context"])

    return await _guarded(request, work)


def on_context(mode: str) -> Any:
    """DELETE /contexts/{id} (``remove``) and POST /contexts/{id}/restart."""

    async def handler(request: Request) -> Response:
        ctx = request.path_params["ctx"]
        if not CONTEXT_ID.fullmatch(ctx):
            return _deny(400, "INVALID_ARGUMENT", "context id: lower-case letters, digits and '-'")

        async def work(agent: link.Agent) -> Response:
            got = await _collect(frames(agent, [mode, ctx]))
            if any(f["type"] == "cbx_ok" for f in got):
                return Response(status_code=204)
            return _error_response(next((f for f in got if f["type"] == "cbx_error"), {}))

        return await _guarded(request, work)

    return handler


async def health(request: Request) -> Response:
    return Response(status_code=204)


def build(env: Env) -> Starlette:
    app = Starlette(routes=[
        Route("/execute", execute, methods=["POST"]),
        Route("/contexts", create, methods=["POST"]),
        Route("/contexts", listing, methods=["GET"]),
        Route("/contexts/{ctx}", on_context("remove"), methods=["DELETE"]),
        Route("/contexts/{ctx}/restart", on_context("restart"), methods=["POST"]),
        Route("/health", health, methods=["GET"]),
    ])
    app.state.interp = Interp(env)
    return app
