"""``cellbox exec``'s supervision flags, as Tensorlake's ``tl sbx exec`` spells them:
``--name``, ``--restart never|on-failure|always``, ``--max-restarts``,
``--initial-backoff-ms``, ``--max-backoff-ms``, ``--health-http PORT[:/path]`` or
``--health-tcp PORT``, ``--health-{initial-delay,interval,timeout}-ms``,
``--health-failure-threshold`` (alias ``--health-retries``, Docker's word).

Why a decorator of its own: eleven options would make ``exec`` a function of twenty
parameters; here they are folded into one ``Supervision`` (or None when none was
given), checked before anything is sent, so a bad combination is a usage error (exit
2) naming the flag, never a half-started process. The agent's probes are HTTP and TCP
only (``agent/health.py``): there is no ``--health-cmd``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

_HEALTH_TIMING = ("health_initial_delay_ms", "health_interval_ms", "health_timeout_ms", "health_failure_threshold")
_KEYS = ("name", "restart", "max_restarts", "initial_backoff_ms", "max_backoff_ms", "health_http", "health_tcp",
         *_HEALTH_TIMING)


@dataclass(frozen=True)
class Supervision:
    """What ``start_process`` gets: a name, a restart policy and a health check."""

    name: str | None
    restart: dict[str, Any] | None
    health_check: dict[str, Any] | None


def parse_health_http(value: str) -> tuple[int, str | None]:
    """``8080`` or ``8080:/healthz`` -> (port, path)."""
    port_s, sep, path = value.partition(":")
    if not port_s.isdigit() or not 1 <= int(port_s) <= 65535:
        raise click.BadParameter(f"{value!r}: expected PORT[:/path] with PORT 1-65535", param_hint="--health-http")
    if sep and (not path.startswith("/") or any(c in path for c in " \r\n")):
        raise click.BadParameter(f"{value!r}: the path must start with '/' and hold no spaces",
                                 param_hint="--health-http")
    return int(port_s), (path if sep else None)


def _health(opts: dict[str, Any]) -> dict[str, Any] | None:
    http, tcp = opts["health_http"], opts["health_tcp"]
    timing = {k.removeprefix("health_"): opts[k] for k in _HEALTH_TIMING if opts[k] is not None}
    if http is not None and tcp is not None:
        raise click.UsageError("--health-http and --health-tcp exclude each other")
    if http is None and tcp is None:
        if timing:
            flags = ", ".join("--" + k.replace("_", "-") for k in _HEALTH_TIMING if opts[k] is not None)
            raise click.UsageError(f"{flags} need --health-http or --health-tcp")
        return None
    if http is not None:
        port, path = parse_health_http(http)
        return {"type": "http", "port": port, **({"path": path} if path else {}), **timing}
    return {"type": "tcp", "port": tcp, **timing}


def _restart(opts: dict[str, Any]) -> dict[str, Any] | None:
    fields = {k: opts[k] for k in ("max_restarts", "initial_backoff_ms", "max_backoff_ms") if opts[k] is not None}
    if opts["restart"] is None and not fields:
        return None
    lo, hi = fields.get("initial_backoff_ms"), fields.get("max_backoff_ms")
    if lo is not None and hi is not None and hi < lo:
        raise click.BadParameter("must be >= --initial-backoff-ms", param_hint="--max-backoff-ms")
    return {"policy": (opts["restart"] or "on-failure").replace("-", "_"), **fields}


def _name(value: str | None) -> str | None:
    if value is not None and (not value or "/" in value or value.isdigit()):
        raise click.BadParameter("a process name is non-empty, has no '/', and is not all digits",
                                 param_hint="--name")
    return value


def supervision_options(fn: F) -> F:
    """Add the flags to a command; it gets ``supervise: Supervision | None``."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        opts = {k: kwargs.pop(k) for k in _KEYS}
        name, restart, health = _name(opts["name"]), _restart(opts), _health(opts)
        wanted = name is not None or restart is not None or health is not None
        return fn(*args, supervise=Supervision(name, restart, health) if wanted else None, **kwargs)

    ms = click.IntRange(0, 7 * 24 * 3600 * 1000)
    options = [
        click.option("--name", default=None, help="Name the process (a managed process, reachable by name)."),
        click.option("--restart", type=click.Choice(["never", "on-failure", "always"]), default=None,
                     help="Restart policy (a managed process) [on-failure when other restart flags are given]."),
        click.option("--max-restarts", type=click.IntRange(0), default=None, help="Automatic restarts at most."),
        click.option("--initial-backoff-ms", type=ms, default=None, help="First restart delay [500]."),
        click.option("--max-backoff-ms", type=ms, default=None, help="Longest restart delay [30000]."),
        click.option("--health-http", default=None, metavar="PORT[:/PATH]", help="Probe by HTTP GET (2xx/3xx)."),
        click.option("--health-tcp", type=click.IntRange(1, 65535), default=None, metavar="PORT",
                     help="Probe by TCP connect."),
        click.option("--health-initial-delay-ms", type=ms, default=None, help="Before the first probe [5000]."),
        click.option("--health-interval-ms", type=click.IntRange(10, ms.max), default=None,
                     help="Between probes [1000]."),
        click.option("--health-timeout-ms", type=click.IntRange(1, ms.max), default=None, help="Per probe [500]."),
        click.option("--health-failure-threshold", "--health-retries", "health_failure_threshold",
                     type=click.IntRange(1, 1_000_000), default=None,
                     help="Failures in a row that make it unhealthy (and restart it) [3]."),
    ]
    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper  # type: ignore[return-value]
