"""SDK errors: the server's ``{"error", "code"}`` answers mapped back to cellbox's classes.

The root is :class:`cellbox.errors.CellboxError` (also exported as ``SandboxError`` for
users coming from Tensorlake), so ``except CellboxError`` catches everything the SDK
raises. The tree, with the classes added here marked ``*``::

    CellboxError = SandboxError (500, INTERNAL)
    ├── InvalidRequest (400, INVALID_REQUEST)          bad arguments, bad path, command not found
    │   └── ImageBuildError* (422, BUILD_FAILED)       a Dockerfile step or the warm-up command failed
    ├── PermissionDenied* (403, PERMISSION_DENIED)     401/403: missing key, path traversal, bad PTY token
    ├── NotFound (404, NOT_FOUND)                      file, process, PTY session
    │   ├── SandboxNotFoundError* (404, SANDBOX_NOT_FOUND)
    │   ├── SnapshotNotFoundError* (404, SNAPSHOT_NOT_FOUND)
    │   └── ImageNotFoundError* (404, IMAGE_NOT_FOUND)
    ├── Conflict (409, CONFLICT)                       name taken, wrong state
    ├── LimitExceeded (429, LIMIT_EXCEEDED)            too many sandboxes or PTY sessions
    ├── WaitTimeout* (408, TIMEOUT)                    a client-side wait ran out (also a TimeoutError)
    ├── InternalFailure (500, INTERNAL)                the server failed
    │   ├── SandboxStartError* (500, SANDBOX_START_FAILED)  the sandbox failed or never became running
    │   │   └── CopyError* (500, COPY_FAILED)           some copies did not start
    │   └── SnapshotError* (500, SNAPSHOT_FAILED)      a snapshot ended ``failed``
    └── SandboxUnavailable* (503, SANDBOX_UNAVAILABLE) 502/503/504: sandbox not running, proxy cannot reach it
        └── SandboxConnectionError* (503, CONNECTION_FAILED)  no answer at all: connect refused, timeout, cut stream

Foreign errors (httpx, sockets, wsproto) are translated here, once, by
:func:`map_transport_errors`; none reaches users.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import httpx

from .. import errors as server
from ..errors import CellboxError, Conflict, InternalFailure, InvalidRequest, LimitExceeded, NotFound

SandboxError = CellboxError



class PermissionDenied(CellboxError):
    """Raised on 401/403: a missing or wrong API key, a path outside the sandbox, a bad PTY token."""

    status = 403
    code = "PERMISSION_DENIED"


class SandboxNotFoundError(NotFound):
    """Raised when the sandbox (ID or name) does not exist, or has gone."""

    status = 404
    code = server.SandboxNotFound.code


class SnapshotNotFoundError(NotFound):
    """Raised when the snapshot does not exist, or has been deleted."""

    status = 404
    code = server.SnapshotNotFound.code


class ImageNotFoundError(NotFound):
    """Raised when no image has the name (or the registry has no such image)."""

    status = 404
    code = server.ImageNotFound.code


class ImageBuildError(InvalidRequest):
    """Raised when a build step (or a pre-boot warm-up command) fails; the message has
    the end of the builder's output."""

    status = 422
    code = "BUILD_FAILED"


class SandboxStartError(InternalFailure):
    """Raised by ``Sandbox.create`` when the sandbox failed, or was not running in time."""

    status = 500
    code = "SANDBOX_START_FAILED"


class CopyError(SandboxStartError):
    """Raised by ``copy`` when some of the copies did not start (the server answered 422).

    ``sandboxes`` holds the copies that did start (``SandboxInfo`` from
    ``SandboxClient.copy``, ``Sandbox`` handles from ``Sandbox.copy``): they are running
    and are yours to terminate. ``failures`` holds the server's entries for the others.
    """

    status = 500
    code = "COPY_FAILED"

    def __init__(
        self, message: str, *, code: str | None = None, sandboxes: list[Any] | None = None,
        failures: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message, code=code)
        self.sandboxes: list[Any] = list(sandboxes or [])
        self.failures: list[dict[str, Any]] = list(failures or [])


class SnapshotError(InternalFailure):
    """Raised when a snapshot the SDK waited for ended ``failed`` (or was deleted meanwhile).

    ``snapshot_id`` names the failed snapshot; its record stays listed until deleted.
    """

    status = 500
    code = "SNAPSHOT_FAILED"
    snapshot_id: str | None = None


class WaitTimeout(CellboxError, TimeoutError):
    """Raised when a client-side wait (``Process.wait``, ``Pty.wait``, suspend, resume, snapshot) runs out of time."""

    status = 408
    code = "TIMEOUT"


class SandboxUnavailable(CellboxError):
    """Raised on 502/503/504: the sandbox is not running or the proxy cannot reach its agent."""

    status = 503
    code = "SANDBOX_UNAVAILABLE"


class SandboxConnectionError(SandboxUnavailable):
    """Raised when there is no answer at all: connection refused, timeout, a stream cut short."""

    status = 503
    code = "CONNECTION_FAILED"


# Machine codes the server, the proxy and the agent send, to the most specific class.
# The server's codes are ``cellbox.errors.WIRE_CODES`` (one class per code); those not
# named here come back as the class of their HTTP status (``STATUS_TO_EXCEPTION``), with
# the server's code kept on the exception. ``tests/unit/test_errors.py`` round-trips them all.
CODE_TO_EXCEPTION: dict[str, type[CellboxError]] = {
    server.SandboxNotFound.code: SandboxNotFoundError,
    server.SandboxNotRunning.code: SandboxUnavailable,
    "PATH_TRAVERSAL": PermissionDenied,  # the agent's codes (agent/errors.py)
    "INVALID_TOKEN": PermissionDenied,
    server.Unauthorized.code: PermissionDenied,
    server.AdminRequired.code: PermissionDenied,
}
for _cls in (
    InternalFailure,
    InvalidRequest,
    NotFound,
    Conflict,
    LimitExceeded,
    PermissionDenied,
    SandboxNotFoundError,
    SnapshotNotFoundError,
    ImageNotFoundError,
    ImageBuildError,
    SandboxStartError,
    CopyError,
    SnapshotError,
    WaitTimeout,
    SandboxUnavailable,
    SandboxConnectionError,
):
    CODE_TO_EXCEPTION.setdefault(_cls.code, _cls)

# HTTP status to class, when the code is unknown to us (or absent: plain-text bodies).
STATUS_TO_EXCEPTION: dict[int, type[CellboxError]] = {
    400: InvalidRequest,
    401: PermissionDenied,
    403: PermissionDenied,
    404: NotFound,
    405: InvalidRequest,
    409: Conflict,
    413: InvalidRequest,
    422: InvalidRequest,
    429: LimitExceeded,
    500: InternalFailure,
    502: SandboxUnavailable,
    503: SandboxUnavailable,
    504: SandboxUnavailable,
}


def error_from_response(
    status: int, body: bytes | str, *, not_found: type[CellboxError] | None = None
) -> CellboxError:
    """The exception for a non-2xx answer; ``not_found`` refines a plain 404 (e.g. on sandbox routes)."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    message, code = text.strip() or f"HTTP {status}", None
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        if isinstance(data.get("error"), str):
            message = data["error"]
        elif isinstance(data.get("message"), str):
            message = data["message"]
        if isinstance(data.get("code"), str):
            code = data["code"]
    cls = CODE_TO_EXCEPTION.get(code or "")
    if cls is None or cls in (InternalFailure, NotFound):
        cls = STATUS_TO_EXCEPTION.get(status) or (InternalFailure if status >= 500 else InvalidRequest)
        if cls is NotFound and not_found is not None:
            cls = not_found
    err = cls(message, code=code)
    err.status = status
    return err


def raise_for_status(response: httpx.Response, *, not_found: type[CellboxError] | None = None) -> None:
    """Raise the mapped exception for a non-2xx response whose body has been read."""
    if response.status_code >= 400:
        raise error_from_response(response.status_code, response.content, not_found=not_found)


@contextlib.contextmanager
def map_transport_errors(what: str = "request") -> Iterator[None]:
    """Translate httpx and socket failures into :class:`SandboxConnectionError`."""
    try:
        yield
    except CellboxError:
        raise
    except httpx.TimeoutException as exc:
        raise SandboxConnectionError(f"{what} timed out: {exc or type(exc).__name__}") from exc
    except httpx.TransportError as exc:
        raise SandboxConnectionError(f"{what} failed: {exc or type(exc).__name__}") from exc
    except (OSError, EOFError) as exc:
        raise SandboxConnectionError(f"{what} failed: {exc or type(exc).__name__}") from exc
