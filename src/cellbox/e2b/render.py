"""Our records as E2B's REST shapes (``Sandbox``, ``SandboxDetail``, ``ListedSandbox``,
``Template``): camelCase keys, RFC 3339 times, E2B's ``running``/``paused`` states."""

from __future__ import annotations

import datetime as dt
from typing import Any

from .manager_api import SandboxRecord, Status

ENVD_VERSION = "0.5.7"  # the envd features we serve: stdin, close_stdin, octet-stream uploads
CLIENT_ID = "cellbox"
DEFAULT_TEMPLATE = "base"  # E2B's default template: our default image
# e2b-code-interpreter's default template: our default image too (it has python3; the
# interpreter's kernel is cellbox's, interp_kernel.py, not a template's Jupyter).
CODE_INTERPRETER_TEMPLATE = "code-interpreter-v1"
META_KEY = "e2b_metadata"
TEMPLATE_KEY = "e2b_template"


def iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).isoformat().replace("+00:00", "Z")


def state(rec: SandboxRecord) -> str:
    return "paused" if rec.status in (Status.SUSPENDED, Status.SUSPENDING) else "running"


def template_of(rec: SandboxRecord) -> str:
    return str(rec.extra.get(TEMPLATE_KEY) or rec.image)


def end_ms(rec: SandboxRecord) -> int:
    if rec.timeout_secs:
        return rec.created_at + rec.timeout_secs * 1000
    return rec.created_at + 100 * 365 * 86400 * 1000  # no limit: far away


def sandbox(rec: SandboxRecord, token: str, traffic: str, domain: str) -> dict[str, Any]:
    """The create / connect / resume answer: what the SDK needs to reach envd."""
    return {"templateID": template_of(rec), "sandboxID": rec.id, "clientID": CLIENT_ID,
            "envdVersion": ENVD_VERSION, "envdAccessToken": token, "trafficAccessToken": traffic,
            "domain": domain, **({"alias": rec.name} if rec.name else {})}


def listed(rec: SandboxRecord) -> dict[str, Any]:
    out: dict[str, Any] = {
        "templateID": template_of(rec), "sandboxID": rec.id, "clientID": CLIENT_ID,
        "startedAt": iso(rec.created_at), "endAt": iso(end_ms(rec)), "cpuCount": max(1, round(rec.cpus)),
        "memoryMB": rec.memory_mb, "diskSizeMB": rec.disk_mb, "state": state(rec), "envdVersion": ENVD_VERSION,
        "metadata": dict(rec.extra.get(META_KEY) or {}),
    }
    if rec.name:
        out["alias"] = rec.name
    return out


def detail(rec: SandboxRecord, token: str, domain: str) -> dict[str, Any]:
    return {**listed(rec), "envdAccessToken": token, "domain": domain,
            "allowInternetAccess": not rec.extra.get("network_policy")}


def template(info: Any) -> dict[str, Any]:
    created = iso(info.created_at) if info.created_at else iso(0)
    return {"templateID": info.name, "buildID": info.digest or info.name, "cpuCount": 1, "memoryMB": 1024,
            "diskSizeMB": 0, "public": True, "aliases": [info.name], "names": [info.name], "createdAt": created,
            "updatedAt": created, "createdBy": None, "lastSpawnedAt": None, "spawnCount": info.in_use,
            "buildCount": 1, "envdVersion": ENVD_VERSION, "buildStatus": "ready"}
