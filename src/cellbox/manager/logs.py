"""A sandbox's logs: what its processes printed, as its agent still holds it, after
the init's own output; bounded in lines and bytes on both sides.

Why bounded: a chatty sandbox's whole output (100 MB) once took the server from 128
to 594 MB and stalled its event loop for 6 s. Everything the agent answers is
untrusted (it is the tenant's PID 1): bad shapes give no lines, not an error.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import agent_client
from .agent_client import AgentClient
from .log_levels import INFO, level_of
from .records import SandboxRecord, Status

log = logging.getLogger(__name__)
# How many of a sandbox's processes (the newest) the logs route reads output from.
LOG_PROCESSES = 50
# One logs answer holds at most the newest LOG_MAX_LINES lines and LOG_MAX_BYTES of
# text; ``tail`` asks for fewer.
LOG_MAX_LINES = 10_000
LOG_MAX_BYTES = 4 << 20
INIT_LOG_BYTES = 256 << 10  # of the runtime's own log file, from its end


@dataclass(frozen=True)
class LogLine:
    timestamp: int  # ms; the start of the process that printed it (collected lines: when printed)
    body: str
    pid: int | None
    command: str | None
    level: int = INFO  # Tensorlake's 1-6 (log_levels.py)


async def read(agent: AgentClient, agent_port: int, sandboxes_dir: Path, rec: SandboxRecord, *,
               process_id: int | None = None, tail: int | None = None) -> tuple[list[LogLine], bool]:
    """What the sandbox's processes printed, as its agent still holds it (the newest
    ``LOG_PROCESSES`` processes, stdout and stderr merged in order), after the init's
    own output if the runtime kept it; and whether lines were left out.

    Bounded: at most the newest ``tail`` (default and cap ``LOG_MAX_LINES``) lines and
    ``LOG_MAX_BYTES`` of text, asked of the agent per process from the newest process
    back (``?tail=&max_bytes=``), so neither the agent's answer nor ours is ever the
    whole output. Best effort: an agent that cannot be asked (or answers what it
    should not) gives no lines, not an error. A sandbox that is not running has none.
    """
    want = LOG_MAX_LINES if tail is None else min(tail, LOG_MAX_LINES)
    budget = LOG_MAX_BYTES
    init = [LogLine(rec.created_at, line, None, "init", level) for line, level in _init_log(sandboxes_dir, rec)]
    if rec.status != Status.RUNNING or not rec.ip:
        return (init[len(init) - want:] if want else []), len(init) > want
    cut = False
    ip, port, key = rec.ip, agent_port, agent_client.key_of(rec)
    chunks: list[list[LogLine]] = []
    try:
        listing = await agent.get_json(ip, port, key, "/api/v1/processes", timeout=5, max_bytes=4 << 20)
        procs = [p for p in listing["processes"][-10_000:] if isinstance(p, dict)]
        procs = sorted(procs, key=lambda p: _int_or(p.get("started_at"), 0))[-LOG_PROCESSES:]
        for proc in reversed(procs):  # newest first, until the budget is spent
            pid = _int_or(proc.get("pid"), -1)
            if process_id is not None and pid != process_id:
                continue
            if want <= 0 or budget <= 0:
                cut = True
                break
            out = await agent.get_json(ip, port, key,
                                       f"/api/v1/processes/{pid}/output?tail={want}&max_bytes={budget}&streams=1",
                                       timeout=5, max_bytes=3 * budget + (64 << 10))
            pairs = _with_streams(out)[-want:]
            lines = [x for x, _ in pairs]
            cut = cut or bool(out.get("truncated"))
            started = _int_or(proc.get("started_at"), rec.created_at)
            command = proc.get("command") if isinstance(proc.get("command"), str) else None
            chunks.append([LogLine(started, line, pid, command, level_of(line, stream)) for line, stream in pairs])
            want -= len(lines)
            budget -= sum(len(x) + 1 for x in lines)
    except (agent_client.AgentError, KeyError, TypeError, AttributeError) as exc:
        log.warning("sandbox %s: reading process output for logs failed: %s", rec.id, exc)
    merged = [line for chunk in reversed(chunks) for line in chunk]
    room = (LOG_MAX_LINES if tail is None else min(tail, LOG_MAX_LINES)) - len(merged)
    cut = cut or len(init) > max(0, room)
    return (init[len(init) - room:] if room > 0 else []) + merged, cut

def _with_streams(out: Any) -> list[tuple[str, str | None]]:
    """(line, stream) pairs of an ``/output?streams=1`` answer; an agent from before
    ``streams`` (a restored old image) sends none: the stream is then unknown."""
    lines = out["lines"]
    streams = out.get("streams")
    if not isinstance(streams, list) or len(streams) != len(lines):
        streams = [None] * len(lines)
    return [(x, s if s in ("stdout", "stderr") else None) for x, s in zip(lines, streams) if isinstance(x, str)]


def _tail_lines(path: Path) -> list[str]:
    try:
        with path.open("rb") as f:
            size = f.seek(0, 2)
            f.seek(max(0, size - INIT_LOG_BYTES))
            return f.read(INIT_LOG_BYTES).decode("utf-8", "replace").splitlines()
    except (FileNotFoundError, NotADirectoryError):
        return []


def _init_log(sandboxes_dir: Path, rec: SandboxRecord) -> list[tuple[str, int]]:
    """The runtime's own lines with their levels: runc's JSON log (``{"level", "msg"}``:
    why a container failed to start or died) and the agent's log if one was kept."""
    out: list[tuple[str, int]] = []
    for raw in _tail_lines(sandboxes_dir / rec.id / "runc.log"):
        try:
            entry = json.loads(raw)
            msg, level = str(entry["msg"]), str(entry.get("level", "info")).lower()
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
        out.append((f"runc: {msg}", level_of(level, None)))
    out += [(line, level_of(line, None)) for line in _tail_lines(sandboxes_dir / rec.id / "agent.log")]
    return out


def _int_or(value: Any, default: int) -> int:
    """An int the agent sent, or ``default`` for anything else (it is untrusted input)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else default
