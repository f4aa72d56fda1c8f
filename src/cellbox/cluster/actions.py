"""What a node does for each command, through the single-host service's public methods.

The node is today's single-host manager: the command names the sandbox by the ID
the control plane chose (the node creates under that ID, so the proxy's host names
work unchanged on both hops) and the project (the local namespace).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import CellboxError, InvalidRequest, NotFound
from ..manager.sandboxes import CreateSpec
from ..manager.service import CreateOptions, SandboxService
from .records import Command

# What a create's payload may carry, with its type: anything else is refused before
# the node touches runc (the control plane validates too; the node does not trust it).
_SPEC_FIELDS = {"image": str, "cpus": (int, float), "memory_mb": int, "disk_mb": int, "timeout_secs": int,
                "name": str}


@dataclass(frozen=True)
class Outcome:
    ok: bool
    state: str | None
    reason: str | None = None
    error: str | None = None
    result: dict[str, Any] | None = None


def _spec(cmd: Command) -> CreateSpec:
    p = cmd.payload
    fields: dict[str, Any] = {}
    for key, typ in _SPEC_FIELDS.items():
        if p.get(key) is not None:
            if not isinstance(p[key], typ) or isinstance(p[key], bool):
                raise InvalidRequest(f"create payload: {key} has the wrong type")
            fields[key] = p[key]
    return CreateSpec(namespace=p["project"], sandbox_id=cmd.sandbox_id, **fields)


async def _create(service: SandboxService, cmd: Command) -> Outcome:
    rec = await service.create(CreateOptions(spec=_spec(cmd)), wait=True, budget=None)
    if rec.status.value != "running":
        why = rec.extra.get("error") or rec.termination_reason or rec.status.value
        return Outcome(False, "failed", reason=f"create failed on the node: {why}")
    return Outcome(True, "running", result={"ip": rec.ip})


async def execute(service: SandboxService, cmd: Command) -> Outcome:
    """Run one command; every error becomes an outcome (the node loop never dies of one)."""
    project = cmd.payload.get("project", "")
    try:
        if cmd.kind == "create":
            return await _create(service, cmd)
        if cmd.kind == "destroy":
            try:
                await service.delete(cmd.sandbox_id, project)
            except NotFound:
                pass  # already gone here: the goal state holds
            return Outcome(True, "terminated", reason="user_terminated")
        if cmd.kind == "suspend":
            rec, _ = await service.suspend(cmd.sandbox_id, project, wait_s=None)
            return Outcome(True, rec.status.value)
        if cmd.kind == "resume":
            rec, _ = await service.resume(cmd.sandbox_id, project, wait_s=None)
            return Outcome(True, rec.status.value)
        return Outcome(False, None, error=f"unknown command {cmd.kind!r}")
    except CellboxError as exc:
        # The sandbox's state did not change (the service cleans up a failed create):
        # a create's failure fails the sandbox, any other leaves its state as it is.
        state = "failed" if cmd.kind == "create" else None
        return Outcome(False, state, reason=exc.message if state else None, error=f"{exc.code}: {exc.message}",
                       result={"status": exc.status})
