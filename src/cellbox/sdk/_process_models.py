"""Supervision options of ``start_process`` (restart policy, health check) and the
PTY sessions ``Sandbox.list_ptys`` returns: the wire shapes of spec §3.1.

Why dataclasses and not dicts: a typo in a field name (``max_restart``) is a
``TypeError`` here, not a silently ignored key; ``to_json`` leaves out what was not
set, so the agent's defaults (the same as Tensorlake's) apply.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidRequest

RESTART_POLICIES = ("never", "on_failure", "always")
HEALTH_TYPES = ("http", "tcp")


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


@dataclass(frozen=True)
class RestartPolicy:
    """When the agent restarts a managed process: ``never``, ``on_failure`` (the
    default: unless it exited 0) or ``always``; at most ``max_restarts`` automatic
    restarts, waiting ``initial_backoff_ms * 2**n`` up to ``max_backoff_ms``."""

    policy: str = "on_failure"
    max_restarts: int | None = None
    initial_backoff_ms: int | None = None
    max_backoff_ms: int | None = None

    def to_json(self) -> dict[str, Any]:
        policy = self.policy.replace("-", "_")  # the CLI's spelling (on-failure) too
        if policy not in RESTART_POLICIES:
            raise InvalidRequest(f"restart policy must be one of {', '.join(RESTART_POLICIES)}, not {self.policy!r}")
        return _drop_none({"policy": policy, "max_restarts": self.max_restarts,
                           "initial_backoff_ms": self.initial_backoff_ms, "max_backoff_ms": self.max_backoff_ms})


@dataclass(frozen=True)
class HealthCheck:
    """A probe of a managed process: ``http`` (GET ``path`` on ``port``, 2xx/3xx is
    healthy) or ``tcp`` (a connect). ``failure_threshold`` failures in a row make it
    unhealthy, and unless the restart policy is ``never`` it is restarted."""

    type: str
    port: int
    path: str | None = None
    initial_delay_ms: int | None = None
    interval_ms: int | None = None
    timeout_ms: int | None = None
    failure_threshold: int | None = None

    def to_json(self) -> dict[str, Any]:
        if self.type not in HEALTH_TYPES:
            raise InvalidRequest(f"health check type must be 'http' or 'tcp', not {self.type!r}")
        return _drop_none({"type": self.type, "port": self.port, "path": self.path,
                           "initial_delay_ms": self.initial_delay_ms, "interval_ms": self.interval_ms,
                           "timeout_ms": self.timeout_ms, "failure_threshold": self.failure_threshold})


def supervision(restart: RestartPolicy | str | Mapping[str, Any] | None, max_restarts: int | None,
                health_check: HealthCheck | Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``restart`` / ``health_check`` fields of a start request (none if not asked)."""
    out: dict[str, Any] = {}
    if isinstance(restart, str):
        restart = RestartPolicy(restart, max_restarts)
    elif restart is None and max_restarts is not None:
        restart = RestartPolicy(max_restarts=max_restarts)
    if isinstance(restart, RestartPolicy):
        out["restart"] = restart.to_json()
    elif restart is not None:
        out["restart"] = dict(restart)
    if isinstance(health_check, HealthCheck):
        out["health_check"] = health_check.to_json()
    elif health_check is not None:
        out["health_check"] = dict(health_check)
    return out


@dataclass(frozen=True)
class PtySession:
    """A terminal session in a sandbox (``GET /api/v1/pty``). Attaching needs its token,
    which only its creator got: a listing never shows one."""

    session_id: str
    pid: int | None = None
    command: str = ""
    args: list[str] = field(default_factory=list)
    rows: int | None = None
    cols: int | None = None
    created_at: int | None = None
    ended_at: int | None = None
    exit_code: int | None = None
    is_alive: bool = False
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PtySession:
        def opt_int(key: str) -> int | None:
            v = data.get(key)
            return v if isinstance(v, int) and not isinstance(v, bool) else None

        return cls(session_id=str(data["session_id"]), pid=opt_int("pid"), command=str(data.get("command") or ""),
                   args=[str(a) for a in data.get("args") or []], rows=opt_int("rows"), cols=opt_int("cols"),
                   created_at=opt_int("created_at"), ended_at=opt_int("ended_at"), exit_code=opt_int("exit_code"),
                   is_alive=bool(data.get("is_alive")), raw=dict(data))
