"""Records to wire shapes (spec §2.1 CreateSandboxResponse, §2.2 SandboxInfo, §2.9 logs).

The only module that knows the response shapes. The Tensorlake client decodes them
strictly (missing ``namespace``, ``status`` outside the enum or ``resources.disk_mb``
make it fail), so every key below is always present; optional ones are ``null``.
Timestamps are epoch milliseconds, like the agent's.
"""

from __future__ import annotations

import uuid
from typing import Any

from ..errors import CellboxError
from ..manager.records import SandboxRecord, Status
from ..manager.service import LogLine, Page
from ..manager.snapshot_store import SnapshotRecord
from .public_urls import PublicUrls


def _error_details(rec: SandboxRecord) -> dict[str, Any] | None:
    return {"message": rec.error} if rec.error else None


Urls = PublicUrls | str  # a bare str: the proxy URL only (no public domain)


def _urls(urls: Urls) -> PublicUrls:
    return PublicUrls(urls) if isinstance(urls, str) else urls


def _sandbox_url(rec: SandboxRecord, urls: Urls) -> str | None:
    return _urls(urls).proxy_url if rec.status == Status.RUNNING else None


def _ingress(rec: SandboxRecord, urls: Urls) -> dict[str, Any]:
    """Tensorlake's ``ingress_endpoint`` and our ``port_urls`` (api/public_urls.py)."""
    u = _urls(urls)
    ports = {str(p): u.port_url(rec.id, p) for p in rec.exposed_ports} if u.ingress_endpoint else {}
    return {"ingress_endpoint": u.ingress_endpoint, "port_urls": ports}


def sandbox_info(rec: SandboxRecord, proxy_url: Urls) -> dict[str, Any]:
    info: dict[str, Any] = {
        "id": rec.id,  # not also "sandbox_id": the SDK's decoder takes it as a duplicate
        "namespace": rec.namespace,
        "status": rec.status.value,
        "resources": {"cpus": float(rec.cpus), "memory_mb": rec.memory_mb, "disk_mb": rec.disk_mb},
        "image": rec.image,
        "name": rec.name,
        "timeout_secs": rec.timeout_secs,
        "entrypoint": rec.entrypoint,
        "created_at": rec.created_at,
        "terminated_at": rec.terminated_at,
        "termination_reason": rec.termination_reason,
        "error_details": _error_details(rec),
        "exposed_ports": list(rec.exposed_ports),
        "allow_unauthenticated_access": rec.allow_unauthenticated_access,
        "auto_resume": rec.auto_resume,
        "sandbox_url": _sandbox_url(rec, proxy_url),
        **_ingress(rec, proxy_url),
        "file_systems": volume_mounts(rec),
    }
    if rec.status == Status.PENDING:
        info["pending_reason"] = "scheduling"
    if pool := rec.extra.get("pool_id"):
        info["pool_id"] = pool
    if resize := rec.extra.get("resource_resize"):  # spec §2.2: the latest live resize
        info["resource_resize"] = resize
    if policy := rec.extra.get("network_policy"):
        info["network_policy"] = policy
    if last := rec.extra.get("last_error"):  # e.g. a suspend that failed (ours; clients ignore it)
        info["last_error"] = last
    return info


def volume_mounts(rec: SandboxRecord) -> list[dict[str, Any]]:
    """The sandbox's volumes as Tensorlake's ``FileSystemMount`` (name as ``file_system_id``)."""
    out = []
    for m in rec.extra.get("volumes") or []:
        item = {"file_system_id": m["name"], "mount_path": m["mount_path"], "read_only": m["read_only"]}
        if m.get("version_id"):
            item["snapshot_id"] = m["version_id"]
        out.append(item)
    return out


def create_response(rec: SandboxRecord, proxy_url: Urls) -> dict[str, Any]:
    body: dict[str, Any] = {
        "sandbox_id": rec.id,
        "status": rec.status.value,  # not also its alias "state": the SDK rejects duplicates
        "name": rec.name,
        "sandbox_url": _sandbox_url(rec, proxy_url),
        **_ingress(rec, proxy_url),
        "termination_reason": rec.termination_reason,
        "error_details": _error_details(rec),
    }
    if rec.status == Status.PENDING:
        body["pending_reason"] = "scheduling"
    return body


def sandbox_list(page: Page, proxy_url: Urls) -> dict[str, Any]:
    body: dict[str, Any] = {"sandboxes": [sandbox_info(r, proxy_url) for r in page.records]}
    if page.next_cursor:
        body["next_cursor"] = page.next_cursor
    return body


def log_signals(sandbox_id: str, namespace: str, lines: list[tuple[int, LogLine]],
                next_token: str | None = None) -> dict[str, Any]:
    """(index, line) pairs as SandboxLogSignal entries (spec §2.9); UUIDs are stable per
    line (its index in the sandbox's log)."""
    return {
        "nextToken": next_token,
        "logs": [
            {
                "timestamp": line.timestamp,
                "uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"cellbox:{sandbox_id}:{line.pid}:{i}")),
                "namespace": namespace,
                "application": "",
                "sandboxId": sandbox_id,
                "resourceAttributes": [
                    ["process.pid", "" if line.pid is None else str(line.pid)],
                    ["process.command", line.command or ""],
                ],
                "body": line.body,
                "logAttributes": "{}",
                "allocations": [],
                "functionRuns": [],
                "level": line.level,
            }
            for i, line in lines
        ]
    }


def snapshot_info(snap: SnapshotRecord) -> dict[str, Any]:
    """SnapshotInfo (spec §2.6): ``id`` only, not also its alias ``snapshot_id``."""
    return {
        "id": snap.id,
        "namespace": snap.namespace,
        "sandbox_id": snap.sandbox_id,
        "status": snap.status.value,
        "snapshot_type": snap.snapshot_type.value,
        "base_image": snap.base_image,
        "created_at": snap.created_at,
        "size_bytes": snap.size_bytes,
        "error": snap.error,
    }


def snapshot_list(snaps: list[SnapshotRecord]) -> dict[str, Any]:
    return {"snapshots": [snapshot_info(s) for s in snaps]}


def copy_response(source: SandboxRecord, copies: list[SandboxRecord | CellboxError], proxy_url: Urls) -> dict[str, Any]:
    """CopySandboxResponse (spec §2.7): one entry per requested copy, failures included."""
    entries: list[dict[str, Any]] = []
    for c in copies:
        if isinstance(c, SandboxRecord):
            entries.append(create_response(c, proxy_url))
        else:
            entries.append({"sandbox_id": "", "status": "failed", "reason": c.code,
                            "error_details": {"message": c.message}})
    return {"source_sandbox_id": source.id, "sandboxes": entries}
