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

Below the classes by status come the **domain errors**: one
class per wire code, whose constructor takes the object the error is about
(``NameTaken(name)``, ``SandboxNotFound(ref)``) and writes the message, so no call
site spells a code or a message of its own. ``WIRE_CODES`` maps every code to its one
class; the SDK (``sdk/_errors.py``) maps the same codes back to its classes
(``tests/unit/test_errors.py`` checks both).
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


# -- domain errors: one class per wire code, built from the object -------------------------
#
# Why classes and not ``Conflict(msg, code="NAME_TAKEN")`` at each call site: the code
# and the message were spelled at ~45 places (NAME_TAKEN five times, two wordings), and
# the SDK could only guess which server error a code meant. Each class below is the one
# place its code is written; ``WIRE_CODES`` is checked for duplicates at import.
# A few codes are sent with two statuses for historic API reasons (a resume of a
# running sandbox is a 400, a memstate race on it a 409): ``status=`` keeps those as
# they were on the wire instead of inventing a second code.

WIRE_CODES: dict[str, type[CellboxError]] = {}


def _wire(cls: type[CellboxError]) -> type[CellboxError]:
    """Register ``cls`` as the one class of its code (a duplicate fails at import)."""
    other = WIRE_CODES.setdefault(cls.code, cls)
    if other is not cls:
        raise TypeError(f"wire code {cls.code} is defined twice: {other.__name__} and {cls.__name__}")
    return cls


for _base in (CellboxError, InvalidRequest, Unauthorized, Forbidden, QuotaExceeded, NotFound, Conflict,
              LimitExceeded, RateLimited, NoSpace):
    _wire(_base)


class _Domain(CellboxError):
    """A domain error: the message is made from the object, the status may be overridden."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status


@_wire
class SandboxNotFound(_Domain, NotFound):
    code = "SANDBOX_NOT_FOUND"

    def __init__(self, ref: str) -> None:
        super().__init__(f"sandbox {ref!r} not found")


@_wire
class SnapshotNotFound(_Domain, NotFound):
    code = "SNAPSHOT_NOT_FOUND"

    def __init__(self, snapshot_id: str) -> None:
        super().__init__(f"snapshot {snapshot_id!r} not found")


@_wire
class ImageNotFound(_Domain, NotFound):
    """An image name nobody has (``in_registry``: the registry said so; ``base_of``: a
    Dockerfile's FROM, which makes the build request a 400)."""

    code = "IMAGE_NOT_FOUND"

    def __init__(self, name: str, *, in_registry: bool = False, base_of: bool = False) -> None:
        if in_registry:
            super().__init__(f"image {name} not found in the registry")
        elif base_of:
            super().__init__(f"dockerfile: base image {name!r} not found", status=400)
        else:
            super().__init__(f"image {name!r} not found")


@_wire
class NameTaken(_Domain, Conflict):
    code = "NAME_TAKEN"

    def __init__(self, name: str) -> None:
        super().__init__(f"a sandbox named {name!r} already exists")


@_wire
class SandboxNotRunning(_Domain, Conflict):
    """The sandbox is not in a state where it answers (stopped, gone, pending)."""

    code = "SANDBOX_NOT_RUNNING"

    def __init__(self, sandbox_id: str, state: str, *, suffix: str = "") -> None:
        super().__init__(f"sandbox {sandbox_id} is {state}{suffix}")


@_wire
class InvalidState(_Domain, Conflict):
    """The operation needs the sandbox in another state (``need`` says which)."""

    code = "INVALID_STATE"

    def __init__(self, sandbox_id: str, state: str, need: str, *, status: int | None = None) -> None:
        super().__init__(f"sandbox {sandbox_id} is {state}{need}", status=status)


@_wire
class SandboxPending(_Domain, Conflict):
    code = "SANDBOX_PENDING"
    def __init__(self, sandbox_id: str) -> None:
        super().__init__(f"sandbox {sandbox_id} is still being created; try again")


@_wire
class SandboxTerminated(_Domain, NotFound):
    code = "SANDBOX_TERMINATED"

    def __init__(self, sandbox_id: str, state: str) -> None:
        super().__init__(f"sandbox {sandbox_id} is {state}: it no longer accepts requests")


@_wire
class PortNotExposed(_Domain, Conflict):
    code = "PORT_NOT_EXPOSED"

    def __init__(self, port: int, sandbox_id: str) -> None:
        super().__init__(f"port {port} of sandbox {sandbox_id} is not exposed")


@_wire
class SandboxNotNamed(_Domain, InvalidRequest):
    code = "SANDBOX_NOT_NAMED"
    def __init__(self) -> None:
        super().__init__("only named sandboxes can be suspended (ephemeral ones are terminated)")


@_wire
class SnapshotNotReady(_Domain, InvalidRequest):
    code = "SNAPSHOT_NOT_READY"

    def __init__(self, snapshot_id: str, state: str) -> None:
        super().__init__(f"snapshot {snapshot_id} is {state}, not completed")


@_wire
class SuspendFailed(_Domain, Conflict):
    """CRIU could not dump the sandbox (409: its state, not the server, is the problem)."""

    code = "SUSPEND_FAILED"

    def __init__(self, sandbox_id: str, *, stopped: bool = False) -> None:
        what = ("and the sandbox stopped" if stopped else
                "; the sandbox keeps running. Usually a process in it uses something that "
                "cannot be checkpointed (a nested namespace, a traced process, a device)")
        super().__init__(f"sandbox {sandbox_id} could not be suspended {what}".replace(" ;", ";"))


@_wire
class SecretNotFound(_Domain, NotFound):
    """Unknown secret names: 404 on the secrets routes, 400 in a create (``in_create``)."""

    code = "SECRET_NOT_FOUND"

    def __init__(self, names: list[str], *, in_create: bool = False) -> None:
        if in_create:
            super().__init__(f"secret_names: no secret named {', '.join(map(repr, names))} in this project "
                             "(cellbox secret set NAME)", status=400)
        else:
            super().__init__(f"secret {names[0]!r} not found")


@_wire
class ImageProtected(_Domain, Conflict):
    """The default image is made by setup: not replaced, removed, or pooled by the API."""

    code = "IMAGE_PROTECTED"

    def __init__(self, name: str, *, pool: bool = False) -> None:
        if pool:
            super().__init__("the default image's pool is set with CELLBOX_WARM_POOL", status=400)
        else:
            super().__init__(f"{name} is the default image; it is made by `cellbox setup`")


@_wire
class ImageInUse(_Domain, Conflict):
    code = "IMAGE_IN_USE"

    def __init__(self, name: str, users: list[str]) -> None:
        super().__init__(f"image {name!r} is in use by {len(users)} sandbox(es): {', '.join(users[:5])}")


@_wire
class ImageExists(_Domain, Conflict):
    code = "IMAGE_EXISTS"

    def __init__(self, name: str) -> None:
        super().__init__(f"an image named {name!r} already exists (built or pulled): remove it first")


@_wire
class ProjectNotFound(_Domain, NotFound):
    code = "PROJECT_NOT_FOUND"

    def __init__(self, project: str) -> None:
        super().__init__(f"project {project!r} not found")


@_wire
class KeyNotFound(_Domain, NotFound):
    code = "KEY_NOT_FOUND"

    def __init__(self, key_id: str) -> None:
        super().__init__(f"key {key_id!r} not found")


@_wire
class OrganizationNotFound(_Domain, NotFound):
    code = "ORGANIZATION_NOT_FOUND"

    def __init__(self, org: str) -> None:
        super().__init__(f"organization {org!r} not found")


@_wire
class AdminRequired(_Domain, Forbidden):
    code = "ADMIN_REQUIRED"

    def __init__(self) -> None:
        super().__init__("this needs an admin key")


@_wire
class UnresolvableHost(_Domain, InvalidRequest):
    code = "UNRESOLVABLE_HOST"

    def __init__(self, host: str) -> None:
        super().__init__(f"network: host name {host!r} does not resolve")


@_wire
class DockerfileNotFound(_Domain, InvalidRequest):
    code = "DOCKERFILE_NOT_FOUND"

    def __init__(self, path: str) -> None:
        super().__init__(f"dockerfile: {path!r} not found in the build context")


@_wire
class DigestMismatch(_Domain, InvalidRequest):
    code = "DIGEST_MISMATCH"

    def __init__(self, actual: str, pinned: str) -> None:
        super().__init__(f"image: the registry's manifest is {actual}, not the pinned {pinned}")


@_wire
class InvalidContext(_Domain, InvalidRequest):
    """A build context upload that is not a usable tar (``problem`` says how)."""

    code = "INVALID_CONTEXT"

    def __init__(self, problem: str) -> None:
        super().__init__(f"body: {problem}")


@_wire
class PayloadTooLarge(_Domain, InvalidRequest):
    code = "PAYLOAD_TOO_LARGE"

    def __init__(self, what: str, limit_mib: int) -> None:
        super().__init__(f"{what} is larger than {limit_mib} MiB")


@_wire
class NotSupported(_Domain, InvalidRequest):
    code = "NOT_SUPPORTED"  # the message says what (``api/models.py``)


@_wire
class RootfsUnusable(_Domain, Conflict):
    code = "ROOTFS_UNUSABLE"

    def __init__(self, problem: str) -> None:
        super().__init__(f"the sandbox's root filesystem {problem}")


@_wire
class AgentError(CellboxError):
    """The agent answered something the host cannot trust or use (or nothing in time)."""

    status = 502
    code = "BAD_AGENT_RESPONSE"


@_wire
class AgentNotAuthentic(AgentError):
    code = "AGENT_NOT_AUTHENTIC"


@_wire
class AgentResponseTooLarge(AgentError):
    code = "AGENT_RESPONSE_TOO_LARGE"

    def __init__(self, what: str, limit: int) -> None:
        super().__init__(f"the sandbox's agent sent {what} over {limit} bytes")


@_wire
class AgentTimeout(AgentError):
    code = "AGENT_TIMEOUT"

    def __init__(self, verb: str, timeout: float) -> None:
        super().__init__(f"the sandbox's agent did not {verb} within {timeout:g}s")


@_wire
class AgentUnreachable(AgentError):
    code = "AGENT_UNREACHABLE"

    def __init__(self, exc: BaseException) -> None:
        super().__init__(f"could not talk to the sandbox's agent: {type(exc).__name__}: {exc}")
