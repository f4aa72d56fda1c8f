"""The one place where the API chooses HTTP status codes for errors.

Every error body is ``{"error": "<message>", "code": "<MACHINE_CODE>"}`` (spec §1.6;
the SDK shows the raw body):

* ``CellboxError`` (and subclasses): its own ``status`` and ``code``.
* request validation (bad JSON, wrong types, out-of-range values, bad query or path
  parameters): 400 ``INVALID_REQUEST``, ``error`` = ``"<field>: <problem>"`` (never
  FastAPI's 422).
* framework HTTP errors: unknown route 404 ``NOT_FOUND``, wrong method 405
  ``METHOD_NOT_ALLOWED``, body over the limit 413 ``PAYLOAD_TOO_LARGE``.
* anything else is a bug: logged with its traceback, answered 500 ``INTERNAL``.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from ..errors import CellboxError

log = logging.getLogger(__name__)

_HTTP_CODES = {
    400: "INVALID_REQUEST",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "code": code}, status_code=status, headers=headers)


class PayloadTooLarge(HTTPException):
    """A body over the limit, found while reading it (the framework passes HTTP
    errors through its body parsing untouched)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is larger than {limit} bytes")


def payload_too_large(limit: int) -> JSONResponse:
    """The answer to a body over the limit, found from its Content-Length."""
    return error_response(413, "PAYLOAD_TOO_LARGE", f"request body is larger than {limit} bytes",
                          {"Connection": "close"})


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    return ".".join(parts) or "body"


def validation_message(errors: list[dict[str, Any]]) -> str:
    """``"<field>: <problem>"`` for each problem, joined with ``"; "``."""
    out = []
    for err in errors[:5]:
        kind, msg = err.get("type", ""), str(err.get("msg", "invalid"))
        if kind == "json_invalid":
            detail = (err.get("ctx") or {}).get("error", "")
            out.append(f"body: malformed JSON{': ' + detail if detail else ''}")
            continue
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        out.append(f"{_field(tuple(err.get('loc', ())))}: {msg}")
    if len(errors) > 5:
        out.append(f"and {len(errors) - 5} more")
    return "; ".join(out)


async def _cellbox_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, CellboxError)
    if exc.status == 503:  # a refusal under load (OVERLOADED): expected, the client retries
        log.warning("%s %s refused: %s", request.method, request.url.path, exc)
    elif exc.status >= 500:
        log.error("%s %s failed: %s", request.method, request.url.path, exc)
    return error_response(exc.status, exc.code, exc.message, exc.headers or None)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(400, "INVALID_REQUEST", validation_message(list(exc.errors())))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "INVALID_REQUEST" if exc.status_code < 500 else "INTERNAL")
    message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if exc.status_code == 404 and message == "Not Found":
        message = f"no route for {request.method} {request.url.path}"
    return error_response(exc.status_code, code, message, dict(exc.headers or {}))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("%s %s: unexpected error", request.method, request.url.path, exc_info=exc)
    return error_response(500, "INTERNAL", f"internal error: {type(exc).__name__}")


def install(app: FastAPI) -> None:
    app.add_exception_handler(CellboxError, _cellbox_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
