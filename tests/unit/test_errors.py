"""Wire codes: one class per code on the server, and each comes back through the SDK
as the class its status and code promise, with code, status and message intact.

Why a unit test: a code is a contract with every client (the Tensorlake SDK keys its
retries on statuses, ours on codes); before ``cellbox/errors.py`` held them, the same
code was spelled at five call sites in two wordings.
"""

from __future__ import annotations

import inspect
import json

import pytest

from cellbox import errors
from cellbox.api.errors import error_response
from cellbox.sdk import _errors as sdk

# Arguments that build each domain error from "the object" (its constructor's own words).
SAMPLES = {
    "SANDBOX_NOT_FOUND": ("sbx1",), "SNAPSHOT_NOT_FOUND": ("snap1",), "IMAGE_NOT_FOUND": ("img",),
    "NAME_TAKEN": ("web",), "SANDBOX_NOT_RUNNING": ("sbx1", "stopped"),
    "INVALID_STATE": ("sbx1", "pending", ", not suspended"), "SANDBOX_PENDING": ("sbx1",),
    "SANDBOX_TERMINATED": ("sbx1", "terminated"), "PORT_NOT_EXPOSED": (8080, "sbx1"), "SANDBOX_NOT_NAMED": (),
    "SNAPSHOT_NOT_READY": ("snap1", "in_progress"), "SUSPEND_FAILED": ("sbx1",), "SECRET_NOT_FOUND": (["TOKEN"],),
    "IMAGE_PROTECTED": ("default",), "IMAGE_IN_USE": ("img", ["a", "b"]), "IMAGE_EXISTS": ("img",),
    "PROJECT_NOT_FOUND": ("p",), "KEY_NOT_FOUND": ("k",), "ORGANIZATION_NOT_FOUND": ("o",), "ADMIN_REQUIRED": (),
    "UNRESOLVABLE_HOST": ("nx.invalid",), "DOCKERFILE_NOT_FOUND": ("Dockerfile",),
    "DIGEST_MISMATCH": ("sha256:a", "sha256:b"), "INVALID_CONTEXT": ("not a tar",),
    "PAYLOAD_TOO_LARGE": ("the build context", 512), "NOT_SUPPORTED": ("gpus",),
    "ROOTFS_UNUSABLE": ("has no usable /tmp",), "AGENT_RESPONSE_TOO_LARGE": ("a response", 10),
    "AGENT_TIMEOUT": ("answer", 1.0), "AGENT_UNREACHABLE": (OSError("refused"),),
    "RATE_LIMITED": ("slow down",),
}


def _build(code: str, cls: type[errors.CellboxError]) -> errors.CellboxError:
    if code == "RATE_LIMITED":
        return errors.RateLimited("slow down", retry_after=3)
    args = SAMPLES.get(code)
    if args is None:  # a class by status: built from a message, like the SDK builds it
        params = inspect.signature(cls).parameters
        assert "message" in params, f"{cls.__name__}: add a sample for {code}"
        return cls(f"{code} happened")
    return cls(*args)


def test_codes_are_unique_across_the_server() -> None:
    """Every server class that sets a code is the one ``WIRE_CODES`` holds for it (so no
    module defines a second class, or a literal, for a code that exists)."""
    import cellbox.images.build  # noqa: F401 - modules that define their own errors
    import cellbox.images.dockerfile_check  # noqa: F401
    import cellbox.images.pull  # noqa: F401
    import cellbox.manager.service  # noqa: F401
    import cellbox.storage.layer_scan  # noqa: F401

    seen: dict[str, type] = {}
    todo = [errors.CellboxError]
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls.__module__.startswith("cellbox.sdk") or "code" not in vars(cls):
            continue
        if cls is errors.InternalFailure:  # the root's INTERNAL, spelled again on purpose
            continue
        other = seen.setdefault(cls.code, cls)
        assert other is cls, f"code {cls.code} is set by {other.__qualname__} and {cls.__qualname__}"
        if cls.__module__ == "cellbox.errors" and cls.code != "INTERNAL":
            assert errors.WIRE_CODES[cls.code] is cls
    assert len(seen) >= 40


def test_registering_a_code_twice_fails() -> None:
    with pytest.raises(TypeError, match="NAME_TAKEN"):
        @errors._wire
        class Again(errors.Conflict):
            code = "NAME_TAKEN"


@pytest.mark.parametrize("code", sorted(errors.WIRE_CODES))
def test_code_round_trips_server_to_sdk(code: str) -> None:
    """Rendered as the API renders it, parsed as the SDK parses it: same code, status,
    message, and a class of the same family (a 404 stays a NotFound, and so on)."""
    exc = _build(code, errors.WIRE_CODES[code])
    assert exc.code == code
    response = error_response(exc.status, exc.code, exc.message, exc.headers or None)
    body = json.loads(response.body)
    assert body["code"] == code and body["error"] == exc.message
    back = sdk.error_from_response(response.status_code, response.body)
    assert back.code == code and back.status == exc.status and back.message == exc.message
    family = sdk.STATUS_TO_EXCEPTION.get(exc.status) or (
        errors.InternalFailure if exc.status >= 500 else errors.InvalidRequest)
    specific = sdk.CODE_TO_EXCEPTION.get(code)
    assert isinstance(back, specific if specific not in (None, errors.InternalFailure, errors.NotFound) else family)


def test_domain_errors_keep_their_family() -> None:
    """``except NotFound`` / ``except Conflict`` in callers still catch the new classes."""
    assert isinstance(errors.SandboxNotFound("x"), errors.NotFound)
    assert isinstance(errors.NameTaken("x"), errors.Conflict)
    assert errors.NameTaken("web").message == "a sandbox named 'web' already exists"
    assert errors.InvalidState("s", "pending", ", not suspended", status=400).status == 400
    assert errors.ImageNotFound("base", base_of=True).status == 400
    assert isinstance(errors.AgentTimeout("answer", 2), errors.AgentError)
