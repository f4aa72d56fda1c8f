"""Supervised ("managed") processes: restart policy, backoff, health checks.

A start request with any of ``name``/``restart``/``health_check`` creates a
``ManagedProcess`` (spec section 3.1).  It owns a sequence of *incarnations*
(ordinary ``processes.Process`` objects) that all write into one shared
``OutputLog``, so ``/output`` and ``/follow`` span restarts; the log is
finished (follow streams end) only when supervision stops for good.

API view: ``{p}`` (pid of any of the last ``MAX_PID_ALIASES`` incarnations, or
the name) resolves to the *current* incarnation, whose ``ProcessInfo`` carries
``managed`` = ``ManagedProcess.info()``.  Older incarnations are dropped from
the process list.

Policy.  When an incarnation finishes: ``never`` -> stopped; ``on_failure``
(default) -> restart unless it exited 0; ``always`` -> restart.  Being killed
for failing health checks counts as a failure.  ``max_restarts`` bounds the
automatic restarts (a manual restart resets that budget).  Restarts wait
``initial_backoff_ms * 2**n`` capped at ``max_backoff_ms``; ``n`` is reset once
an incarnation became healthy or ran ``BACKOFF_RESET_MS``.  Status is
``starting`` (health check configured, no verdict yet) -> ``running`` ->
``backing_off`` (``next_restart_at`` set) -> ... -> ``stopped``.

Health.  ``initial_delay_ms`` after each start, then a probe every
``interval_ms`` (``health.py``); ``failure_threshold`` consecutive failures ->
``unhealthy`` and, unless the policy is ``never``, SIGTERM -> (``stop_grace_ms``)
-> SIGKILL and a restart.  With ``never`` it keeps running and probing.

Stop.  DELETE: supervision ends at once (status ``stopped``, the name is free
again), the process group gets SIGTERM, SIGKILL after ``stop_grace_ms``
(request field of the start request, overridable per DELETE; default 10 s).
Manual restart (``POST .../restart``): same termination, then a new
incarnation right away; it also revives a stopped managed process.

Imported lazily, on the first start request that asks for supervision.
"""

from __future__ import annotations

import asyncio
import os
import signal
from typing import TYPE_CHECKING, Any

from .errors import APIError, bad_request
from .util import now_ms
from .validate import opt_choice, opt_object

if TYPE_CHECKING:
    from .processes import Process, ProcessManager
    from .spawn import SpawnSpec

DEFAULT_STOP_GRACE_MS = 10_000
BACKOFF_RESET_MS = 10_000
MAX_PID_ALIASES = 8
_MAX_MS = 7 * 24 * 3600 * 1000


def _int(obj: dict[str, Any], key: str, default: int | None, minimum: int, where: str) -> int | None:
    value = obj.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= _MAX_MS:
        raise bad_request(f"field '{where}{key}' must be an integer >= {minimum}")
    return value


class RestartConfig:
    __slots__ = ("policy", "max_restarts", "initial_backoff_ms", "max_backoff_ms")

    def __init__(self, obj: dict[str, Any]) -> None:
        self.policy = opt_choice(obj, "policy", ("never", "on_failure", "always"), "on_failure")
        self.max_restarts = _int(obj, "max_restarts", None, 0, "restart.")
        self.initial_backoff_ms: int = _int(obj, "initial_backoff_ms", 500, 0, "restart.")  # type: ignore[assignment]
        default_max = max(30_000, self.initial_backoff_ms)
        self.max_backoff_ms: int = _int(obj, "max_backoff_ms", default_max, 0, "restart.")  # type: ignore[assignment]
        if self.max_backoff_ms < self.initial_backoff_ms:
            raise bad_request("field 'restart.max_backoff_ms' must be >= initial_backoff_ms")

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}

    def delay_ms(self, step: int) -> int:
        return int(min(self.initial_backoff_ms * 2 ** min(step, 40), self.max_backoff_ms))


class HealthCheck:
    __slots__ = ("type", "port", "path", "initial_delay_ms", "interval_ms", "timeout_ms", "failure_threshold")

    def __init__(self, obj: dict[str, Any]) -> None:
        kind = obj.get("type")
        if kind not in ("http", "tcp"):
            raise bad_request("field 'health_check.type' must be 'http' or 'tcp'")
        self.type: str = kind
        port = obj.get("port")
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise bad_request("field 'health_check.port' must be an integer 1-65535")
        self.port: int = port
        path = obj.get("path")
        if path is not None and (not isinstance(path, str) or not path.startswith("/") or any(c in path for c in " \r\n")):
            raise bad_request("field 'health_check.path' must be an absolute URL path")
        self.path: str | None = path
        self.initial_delay_ms: int = _int(obj, "initial_delay_ms", 5_000, 0, "health_check.")  # type: ignore[assignment]
        self.interval_ms: int = _int(obj, "interval_ms", 1_000, 10, "health_check.")  # type: ignore[assignment]
        self.timeout_ms: int = _int(obj, "timeout_ms", 500, 1, "health_check.")  # type: ignore[assignment]
        self.failure_threshold: int = _int(obj, "failure_threshold", 3, 1, "health_check.")  # type: ignore[assignment]

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}


def parse_stop_grace(value: Any, field: str = "stop_grace_ms") -> int | None:
    if value is None:
        return None
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_MS:
        raise bad_request(f"field '{field}' must be a non-negative integer (milliseconds)")
    return value


class ManagedProcess:
    def __init__(
        self,
        sup: "Supervisor",
        spec: "SpawnSpec",
        restart: RestartConfig,
        health: HealthCheck | None,
        stop_grace_ms: int,
    ) -> None:
        self._sup = sup
        self._pm = sup.pm
        self._loop = asyncio.get_running_loop()
        self.id = "mp_" + os.urandom(6).hex()
        self.spec = spec
        self.name = spec.name
        self.restart = restart
        self.health = health
        self.stop_grace_ms = stop_grace_ms
        self.status = "starting"
        self.restart_count = 0
        self.health_status = "disabled" if health is None else "starting"
        self.health_failures = 0
        self.last_exit: dict[str, Any] | None = None
        self.last_error: str | None = None
        self.next_restart_at: int | None = None
        self.log = self._pm.new_log()
        self.current: Process | None = None
        self._aliases: list[Process] = []
        self._step = 0  # backoff exponent
        self._auto_restarts = 0
        self._intent: str | None = None  # why the agent is terminating the current incarnation
        self._restart_task: asyncio.Task[None] | None = None
        self._restart_timer: asyncio.TimerHandle | None = None
        self._kill_timer: asyncio.TimerHandle | None = None
        self._health_task: asyncio.Task[None] | None = None

    def info(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "status": self.status,
            "restart_count": self.restart_count,
            "restart": self.restart.as_dict(),
            "health_check": self.health.as_dict() if self.health else None,
            "health_status": self.health_status,
            "consecutive_health_failures": self.health_failures,
            "last_exit": self.last_exit,
            "last_error": self.last_error,
            "next_restart_at": self.next_restart_at,
        }

    @property
    def live(self) -> bool:
        return self.status != "stopped"

    # ------------------------------------------------------------- incarnations
    def spawn(self) -> None:
        """Start a new incarnation (APIError if it cannot be executed)."""
        proc = self._pm.spawn(self.spec, log_=self.log, managed=self, on_finish=self._on_finish)
        old = self.current
        if old is not None:
            self._pm.forget(old, keep_pid_alias=True)
            self._aliases.append(old)
            while len(self._aliases) > MAX_PID_ALIASES:
                self._pm.drop_alias(self._aliases.pop(0))
        self.current = proc
        self._intent = None
        self.health_failures = 0
        if self.health is None:
            self.status = "running"
        else:
            self.status = "starting"
            self.health_status = "starting"
            self._health_task = asyncio.ensure_future(self._health_loop(proc, self.health))

    def _on_finish(self, proc: "Process") -> None:
        if proc is not self.current:
            return
        self._cancel_kill_timer()
        self._cancel_health()
        self.last_exit = {
            "exit_code": proc.exit_code,
            "signal": proc.signal,
            "oom_killed": proc.oom_killed,
            "ended_at": proc.ended_at,
        }
        intent = self._intent
        if intent == "restart":
            return  # manual_restart() takes it from here
        self._intent = None
        if intent == "stop" or self._sup.closing:
            self._stopped()
            return
        if (proc.ended_at or 0) - proc.started_at >= BACKOFF_RESET_MS:
            self._step = 0
        failed = intent == "unhealthy" or proc.signal is not None or proc.exit_code != 0
        self._after_exit(failed)

    def _after_exit(self, failed: bool) -> None:
        policy = self.restart.policy
        if policy == "never" or (policy == "on_failure" and not failed):
            self._stopped()
            return
        limit = self.restart.max_restarts
        if limit is not None and self._auto_restarts >= limit:
            self.last_error = f"restart limit reached ({limit} restarts)"
            self._stopped()
            return
        delay = self.restart.delay_ms(self._step)
        self._step += 1
        self.status = "backing_off"
        self.next_restart_at = now_ms() + delay
        self._restart_timer = self._loop.call_later(delay / 1000, self._auto_restart)

    def _auto_restart(self) -> None:
        self._restart_timer = None
        self.next_restart_at = None
        self._auto_restarts += 1
        self.restart_count += 1
        try:
            self.spawn()
        except APIError as err:
            self.last_error = f"restart failed: {err.message}"
            self._after_exit(True)

    def _stopped(self) -> None:
        self.status = "stopped"
        self.next_restart_at = None
        self._cancel_restart_timer()
        self._cancel_health()
        self._sup.live.discard(self)
        self.log.finish()
        if self.current is not None:
            self._pm.retire(self.current)

    def _terminate(self, proc: "Process", grace_ms: int) -> None:
        """SIGTERM the group now, SIGKILL it after ``grace_ms``."""
        self._pm.send_signal(proc, signal.SIGTERM)
        self._pm.send_signal(proc, signal.SIGCONT)
        self._cancel_kill_timer()
        self._kill_timer = self._loop.call_later(grace_ms / 1000, self._kill, proc)

    def _kill(self, proc: "Process") -> None:
        self._kill_timer = None
        if not proc.exited:
            self._pm.kill(proc)

    # ------------------------------------------------------------------ health
    async def _health_loop(self, proc: "Process", check: HealthCheck) -> None:
        from .health import probe

        await asyncio.sleep(check.initial_delay_ms / 1000)
        while proc is self.current and not proc.exited and self._intent is None:
            error = await probe(check.type, check.port, check.path, check.timeout_ms / 1000)
            if proc is not self.current or proc.exited or self._intent is not None:
                return
            if error is None:
                self.health_failures = 0
                self.health_status = "healthy"
                self.status = "running"
                self._step = 0
            else:
                self.health_failures += 1
                self.last_error = f"health check failed: {error}"
                if self.health_failures >= check.failure_threshold:
                    self.health_status = "unhealthy"
                    self.status = "running"
                    if self.restart.policy != "never":
                        self._intent = "unhealthy"
                        self._terminate(proc, self.stop_grace_ms)
                        return
            await asyncio.sleep(check.interval_ms / 1000)

    # ----------------------------------------------------------------- control
    def stop(self, grace_ms: int | None = None) -> None:
        """DELETE: end supervision now; terminate the current incarnation."""
        self._intent = "stop"  # also tells a pending manual_restart() to give up
        self._cancel_restart_timer()
        self.next_restart_at = None
        proc = self.current
        if proc is not None and not proc.finished.is_set():
            self.status = "stopped"
            self._sup.live.discard(self)
            self._cancel_health()
            if not proc.exited:
                self._terminate(proc, self.stop_grace_ms if grace_ms is None else grace_ms)
        elif self.status != "stopped":
            self._stopped()

    async def manual_restart(self) -> None:
        """``POST .../restart``: terminate the current incarnation, start a new one.

        The work runs in its own task: a request that goes away (or a second
        restart request, which just waits for the same task) cannot leave the
        process half-restarted.
        """
        if self._restart_task is None or self._restart_task.done():
            if not self.live and self.name is not None and self._sup.name_taken(self.name):
                raise APIError(409, "NAME_TAKEN", f"another live process is named {self.name!r}")
            self._restart_task = asyncio.ensure_future(self._restart())
        await asyncio.shield(self._restart_task)

    async def _restart(self) -> None:
        self._cancel_restart_timer()
        self.next_restart_at = None
        self._sup.live.add(self)
        proc = self.current
        if proc is not None and not proc.finished.is_set():
            self._intent = "restart"
            self.status = "starting"
            self._cancel_health()
            if not proc.exited:
                self._terminate(proc, self.stop_grace_ms)
            await proc.finished.wait()
            if self._intent != "restart":  # stopped (DELETE) meanwhile
                return
        self._intent = None
        if self._sup.closing:
            return
        self.log.reopen()
        self.restart_count += 1
        self._step = 0
        self._auto_restarts = 0
        try:
            self.spawn()
        except APIError as err:
            self.last_error = f"restart failed: {err.message}"
            self._after_exit(True)

    def shutdown(self) -> None:
        self._cancel_restart_timer()
        self._cancel_health()

    # ----------------------------------------------------------------- helpers
    def _cancel_restart_timer(self) -> None:
        if self._restart_timer is not None:
            self._restart_timer.cancel()
            self._restart_timer = None

    def _cancel_kill_timer(self) -> None:
        if self._kill_timer is not None:
            self._kill_timer.cancel()
            self._kill_timer = None

    def _cancel_health(self) -> None:
        task = self._health_task
        self._health_task = None
        if task is not None and task is not asyncio.current_task():
            task.cancel()


class Supervisor:
    """All managed processes; created on the first supervised start request."""

    def __init__(self, pm: "ProcessManager") -> None:
        self.pm = pm
        self.live: set[ManagedProcess] = set()
        self.closing = False

    def name_taken(self, name: str) -> bool:
        return any(mp.name == name for mp in self.live)

    def start(self, spec: "SpawnSpec", obj: dict[str, Any]) -> "Process":
        restart = RestartConfig(opt_object(obj, "restart") or {})
        check_obj = opt_object(obj, "health_check")
        health = HealthCheck(check_obj) if check_obj is not None else None
        grace = parse_stop_grace(obj.get("stop_grace_ms"))
        if spec.name is not None and self.name_taken(spec.name):
            raise APIError(409, "NAME_TAKEN", f"a live process is already named {spec.name!r}")
        mp = ManagedProcess(self, spec, restart, health, DEFAULT_STOP_GRACE_MS if grace is None else grace)
        mp.spawn()  # APIError (e.g. COMMAND_NOT_FOUND) -> nothing is kept
        self.live.add(mp)
        assert mp.current is not None
        return mp.current

    def shutdown(self) -> None:
        """Agent stopping: no more restarts or probes (the manager kills the processes)."""
        self.closing = True
        for mp in list(self.live):
            mp.shutdown()
