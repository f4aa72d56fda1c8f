"""A minimal SSE reader for tests: run a command through ``/api/v1/processes/run``."""

from __future__ import annotations

import json
from typing import Any

import httpx


def events(response: httpx.Response) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for line in response.iter_lines():
        if line.startswith("data:"):
            payload = line[5:].strip()
            if payload:
                out.append(json.loads(payload))
    return out


def run_command(client: httpx.Client, command: str, args: list[str], timeout: float = 60, **body: Any) -> dict[str, Any]:
    req = {"command": command, "args": args, "timeout": timeout, **body}
    with client.stream("POST", "/api/v1/processes/run", json=req, headers={"Accept": "text/event-stream"}) as r:
        if r.status_code >= 400:
            r.read()
            return {"http_status": r.status_code, "error": r.text}
        evs = events(r)
    result: dict[str, Any] = {"stdout": [], "stderr": [], "events": evs}
    for ev in evs:
        if "line" in ev:
            result[ev.get("stream", "stdout")].append(ev["line"])
        if "exit_code" in ev or "signal" in ev:
            result.update({k: ev.get(k) for k in ("exit_code", "signal", "reason", "oom_killed")})
    result["out"] = "\n".join(result["stdout"])
    result["err"] = "\n".join(result["stderr"])
    return result
