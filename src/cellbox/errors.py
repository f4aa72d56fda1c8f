"""The one exception hierarchy of cellbox (server, manager, subsystems, CLI).

Every class carries the HTTP status and a stable machine code, so the API layer maps
errors to responses in one place and never picks status codes itself::

    CellboxError (500, INTERNAL)
    ├── InvalidRequest (400, INVALID_REQUEST)      bad input, caught before any side effect
    ├── Unauthorized (401, UNAUTHORIZED)           no API key, or not a valid one
    ├── Forbidden (403, FORBIDDEN)                 a member key asked for an admin action
    │   └── QuotaExceeded (403, QUOTA_EXCEEDED)    a project's limit would be passed
    ├── NotFound (404, NOT_FOUND)                  unknown sandbox, image, snapshot
    ├── Conflict (409, CONFLICT)                   name taken, wrong state for the operation
    ├── LimitExceeded (429, LIMIT_EXCEEDED)        no free address, too many sandboxes
    │   └── RateLimited (429, RATE_LIMITED)        too many creates a minute (Retry-After)
    ├── NoSpace (507, NO_SPACE)                    the storage pool is full
    └── InternalFailure (500, INTERNAL)            a host tool failed; carries its stderr
        └── CommandFailed                          a subprocess exited non-zero
"""

from __future__ import annotations


class CellboxError(Exception):
    """Root of all cellbox errors: ``except CellboxError`` catches every one of them."""

    status: int = 500
    code: str = "INTERNAL"
    # Extra response headers (Retry-After of a rate limit); empty for most errors.
    headers: dict[str, str] = {}

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def to_dict(self) -> dict[str, str]:
        return {"error": self.message, "code": self.code}


class InvalidRequest(CellboxError):
    """Raised when a request is malformed or asks for something impossible (400)."""

    status = 400
    code = "INVALID_REQUEST"


class Unauthorized(CellboxError):
    """Raised when a request carries no API key, or one that is unknown, revoked or expired (401)."""

    status = 401
    code = "UNAUTHORIZED"


class Forbidden(CellboxError):
    """Raised when a valid key asks for what its role may not do (403). Never for another
    project's objects: those are ``NotFound``, so IDs do not reveal what exists."""

    status = 403
    code = "FORBIDDEN"


class QuotaExceeded(Forbidden):
    """Raised when an operation would take a project past one of its quotas (403)."""

    code = "QUOTA_EXCEEDED"


class NotFound(CellboxError):
    """Raised when a sandbox, image or snapshot does not exist (404)."""

    status = 404
    code = "NOT_FOUND"


class Conflict(CellboxError):
    """Raised when a name is taken or the object is in the wrong state (409)."""

    status = 409
    code = "CONFLICT"


class LimitExceeded(CellboxError):
    """Raised when a host-wide limit is hit, e.g. the address pool is exhausted (429)."""

    status = 429
    code = "LIMIT_EXCEEDED"


class RateLimited(LimitExceeded):
    """Raised when a project's creates-per-minute is used up; says when to retry (429)."""

    code = "RATE_LIMITED"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.headers = {"Retry-After": str(max(1, retry_after))}
class NoSpace(CellboxError):
    """Raised when the storage pool has no room for a new sandbox (507).

    507 Insufficient Storage, not 503: it names the problem, and clients (the
    Tensorlake SDK retries 429/502/503/504) should not hammer a full pool with retries;
    space comes back only when someone deletes sandboxes or snapshots.
    """

    status = 507
    code = "NO_SPACE"


class InternalFailure(CellboxError):
    """Raised when the host failed us: a tool crashed, a kernel call was refused (500)."""

    status = 500
    code = "INTERNAL"


class CommandFailed(InternalFailure):
    """Raised when a host command (runc, btrfs, ip, nft, criu) exits non-zero.

    The message names the command and carries the tail of its stderr, so a failure
    can be diagnosed from the API response and the server log alone.
    """

    def __init__(self, argv: list[str], returncode: int, stderr: str) -> None:
        tail = stderr.strip()[-2000:]
        super().__init__(f"{argv[0]} {' '.join(argv[1:3])} failed (exit {returncode}): {tail}")
        self.argv = argv
        self.returncode = returncode
        self.stderr = stderr
