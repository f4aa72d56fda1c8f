"""The lifecycle API client: create, find, list, update and delete sandboxes; suspend,
resume, snapshot and copy them (spec §2.5-§2.7)."""

from __future__ import annotations

import builtins
import contextlib
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import httpx

from ...errors import CellboxError, InternalFailure, InvalidRequest
from .._backend_async import sleep
from .._errors import (
    CopyError,
    SandboxNotFoundError,
    SandboxStartError,
    SnapshotError,
    SnapshotNotFoundError,
    WaitTimeout,
    map_transport_errors,
    raise_for_status,
)
from .._models import SandboxInfo, SnapshotInfo
from .extras import AsyncExtras
from .images import AsyncImages
from .volumes import AsyncVolumes
from .._shared import (
    FINAL_STATES,
    KEEP,
    MAX_WAIT_MS,
    SNAPSHOT_TYPES,
    Config,
    create_body,
    normalize_ports,
    startup_failure,
)

# How often suspend/resume poll the sandbox while the server answers 202 (in progress).
POLL_INTERVAL = 0.5
# States in which the server refuses a suspend/resume for now (409) and will accept it later.
BUSY_STATES = frozenset({"pending", "snapshotting", "suspending"})

if TYPE_CHECKING:
    from .sandbox import AsyncSandbox


class AsyncSandboxClient(AsyncExtras):  # extras: resize, logs, archived, pools (issue 14)
    """Talks to the lifecycle API at ``api_url`` (default ``$CELLBOX_API_URL``, else
    ``http://localhost:8900``), with ``api_key`` as a bearer token (default: ``cellbox.credentials``'s lookup order).

    Sandboxes made from this client (``connect``, ``create_and_connect``) share its HTTP
    connection pool; close the client when done (or use it as a context manager).
    """

    def __init__(self, api_url: str | None = None, api_key: str | None = None, timeout: float | None = None) -> None:
        self.config = Config.resolve(api_url, api_key, timeout)
        self._http = httpx.AsyncClient(
            headers=self.config.headers(), timeout=httpx.Timeout(self.config.timeout), follow_redirects=False
        )
        self.images = AsyncImages(self)
        self.volumes = AsyncVolumes(self)

    @property
    def api_url(self) -> str:
        return self.config.api_url

    async def __aenter__(self) -> AsyncSandboxClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
        ok_statuses: Iterable[int] = (),
        not_found: type[CellboxError] = SandboxNotFoundError,
    ) -> httpx.Response:
        url = self.config.api_url + path
        with map_transport_errors(f"{method} {url}"):
            response = await self._http.request(
                method,
                url,
                json=json,
                params=params,
                headers=headers,
                timeout=httpx.Timeout(timeout) if timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
        if response.status_code not in ok_statuses:
            raise_for_status(response, not_found=not_found)
        return response

    async def create(
        self,
        image: str | None = None,
        cpus: float | None = None,
        memory_mb: int | None = None,
        disk_mb: int | None = None,
        timeout_secs: int | None = None,
        name: str | None = None,
        entrypoint: Sequence[str] | None = None,
        exposed_ports: Iterable[int] | None = None,
        *,
        allow_unauthenticated_access: bool | None = None,
        allow_internet_access: bool = True,
        allow_out: Sequence[str] | None = None,
        deny_out: Sequence[str] | None = None,
        snapshot_id: str | None = None,
        wait: bool = True,
        startup_timeout: float = 300.0,
        secret_names: Sequence[str] | None = None,
    ) -> SandboxInfo:
        """Create a sandbox; with ``wait`` (the default) return once it is running.

        Raises :class:`SandboxStartError` if it fails to start, or is not running after
        ``startup_timeout`` seconds (it is then deleted, so nothing is left queued).
        With ``snapshot_id`` the sandbox starts from that snapshot (its files; for a memory
        snapshot also its processes); ``cpus``/``memory_mb`` left at None then mean the
        snapshot's (else 1.0 and 1024). ``secret_names`` (the project's secrets, see
        :meth:`set_secret`) become environment variables of every process in it.
        """
        body = create_body(
            image=image,
            cpus=cpus,
            memory_mb=memory_mb,
            disk_mb=disk_mb,
            timeout_secs=timeout_secs,
            name=name,
            entrypoint=entrypoint,
            exposed_ports=exposed_ports,
            allow_unauthenticated_access=allow_unauthenticated_access,
            allow_internet_access=allow_internet_access,
            allow_out=allow_out,
            deny_out=deny_out,
            snapshot_id=snapshot_id,
            wait=wait,
            secret_names=secret_names,
        )
        headers = {"X-Tensorlake-Request-Timeout-Ms": str(int(startup_timeout * 1000))}
        response = await self._request(
            "POST", "/sandboxes", json=body, headers=headers, timeout=startup_timeout + 30, ok_statuses=(504,)
        )
        data = response.json()
        if response.status_code == 504 and not isinstance(data, dict):
            raise_for_status(response)
        info = SandboxInfo.from_json(data)
        if not wait:
            return info
        return await self._wait_running(info, startup_timeout)

    async def _wait_running(self, info: SandboxInfo, startup_timeout: float) -> SandboxInfo:
        deadline = time.monotonic() + startup_timeout
        delay = 0.1
        while True:
            if info.status == "running" and info.sandbox_url:
                # The create answer is short (spec §2.1); return the full description.
                return info if "resources" in info.raw else await self.get(info.id)
            if info.status in FINAL_STATES or info.status == "suspended":
                raise startup_failure(info.raw or {"id": info.id, "status": info.status})
            if time.monotonic() >= deadline:
                with contextlib.suppress(CellboxError):
                    await self.delete(info.id)
                raise SandboxStartError(
                    f"sandbox {info.id} was not running after {startup_timeout:g}s (status {info.status}); deleted it"
                )
            await sleep(delay)
            delay = min(delay * 2, 1.0)
            info = await self.get(info.id)

    async def get(self, sandbox_id_or_name: str) -> SandboxInfo:
        """Describe one sandbox (by ID or name); :class:`SandboxNotFoundError` if there is none."""
        response = await self._request("GET", f"/sandboxes/{sandbox_id_or_name}")
        return SandboxInfo.from_json(response.json())

    async def list(self, status: str | None = None) -> builtins.list[SandboxInfo]:
        """All sandboxes the server lists (optionally only those in ``status``), following pages."""
        out: builtins.list[SandboxInfo] = []
        params: dict[str, Any] = {"status": status} if status else {}
        while True:
            data = (await self._request("GET", "/sandboxes", params=params or None)).json()
            items = data.get("sandboxes", []) if isinstance(data, dict) else data
            out.extend(SandboxInfo.from_json(item) for item in items)
            cursor = data.get("next_cursor") if isinstance(data, dict) else None
            if not cursor or not items:
                return out
            params = {**params, "cursor": cursor}

    async def update(
        self,
        sandbox_id_or_name: str,
        *,
        name: str | None = None,
        exposed_ports: Iterable[int] | None = None,
        allow_unauthenticated_access: bool | None = None,
        network: dict[str, Any] | None = KEEP,
    ) -> SandboxInfo:
        """Rename a sandbox, replace its exposed ports (``[]`` clears them) or its egress
        policy (``network``: a :func:`network_body` dict; None clears it; left out: kept)."""
        body: dict[str, Any] = {}
        if network is not KEEP:
            body["network"] = network
        if name is not None:
            body["name"] = name
        if exposed_ports is not None:
            body["exposed_ports"] = normalize_ports(exposed_ports)
        if allow_unauthenticated_access is not None:
            body["allow_unauthenticated_access"] = allow_unauthenticated_access
        response = await self._request("PATCH", f"/sandboxes/{sandbox_id_or_name}", json=body)
        return SandboxInfo.from_json(response.json())

    async def delete(self, sandbox_id_or_name: str) -> None:
        """Terminate a sandbox. Deleting one that is already gone is not an error."""
        await self._request("DELETE", f"/sandboxes/{sandbox_id_or_name}", ok_statuses=(404,))

    # -- suspend / resume (spec §2.5) -------------------------------------------------------

    async def suspend(self, sandbox_id_or_name: str, *, wait: bool = True, timeout: float = 300.0) -> SandboxInfo:
        """Suspend a named sandbox: its memory and files are kept on disk, nothing runs.

        With ``wait`` return once it is ``suspended`` (:class:`WaitTimeout` after ``timeout``
        seconds), else as soon as the server has started. An ephemeral (unnamed) sandbox
        cannot be suspended: :class:`InvalidRequest` with code ``SANDBOX_NOT_NAMED``.
        """
        return await self._transition(sandbox_id_or_name, "suspend", "suspended", "running", wait, timeout)

    async def resume(self, sandbox_id_or_name: str, *, wait: bool = True, timeout: float = 300.0) -> SandboxInfo:
        """Resume a suspended sandbox where it left off (same ID, files and processes).

        With ``wait`` return once it is ``running`` again (:class:`WaitTimeout` after
        ``timeout`` seconds), else as soon as the server has started.
        """
        return await self._transition(sandbox_id_or_name, "resume", "running", "suspended", wait, timeout)

    async def migrate(self, sandbox_id_or_name: str, *, to: str | None = None,
                      timeout: float = 600.0) -> dict[str, Any]:
        """Cluster mode: live-migrate a running sandbox to node ``to`` (or one the
        scheduler picks). It keeps its ID, name, files, memory and processes; returns
        the cluster's record of it (``node_id`` is the new node). Raises like any call:
        409 ``MIGRATION_FAILED`` (it runs on where it was), ``NO_NODE``, ``INVALID_STATE``.
        """
        response = await self._request("POST", f"/sandboxes/{sandbox_id_or_name}/migrate",
                                        json={"to": to} if to else {}, timeout=timeout)
        out: dict[str, Any] = response.json()
        return out

    async def _transition(
        self, ref: str, verb: str, target: str, origin: str, wait: bool, timeout: float
    ) -> SandboxInfo:
        deadline = time.monotonic() + timeout
        while True:
            remaining = max(0.0, deadline - time.monotonic())
            # With wait, the server holds the request until settled (200) or wait_ms (202).
            wait_ms = min(int(remaining * 1000), MAX_WAIT_MS)
            response = await self._request(
                "POST",
                f"/sandboxes/{ref}/{verb}",
                params={"wait_ms": wait_ms} if wait else None,
                timeout=self.config.timeout + (wait_ms / 1000 if wait else 0),
                ok_statuses=(409,),
            )
            if response.status_code != 409:
                break
            # Wrong state: fine if already there; retry while the sandbox is busy with
            # something that will end (a snapshot, a suspend); else the server's error.
            info = await self.get(ref)
            if info.status == target:
                return info
            if not (wait and info.status in BUSY_STATES and time.monotonic() < deadline):
                raise_for_status(response)
            await sleep(POLL_INTERVAL)
        info = _sandbox_info_or_none(response)
        if not wait:
            return info or await self.get(ref)
        if response.status_code == 200 and info is not None and info.status == target:
            return info
        seen_change = False
        while True:
            info = await self.get(ref)
            if info.status == target:
                return info
            if info.status in FINAL_STATES:
                reason = info.termination_reason or "unknown reason"
                raise InternalFailure(f"sandbox {info.id} became {info.status} during {verb} ({reason})")
            if info.status != origin:
                seen_change = True
            elif seen_change:
                raise InternalFailure(f"{verb} of sandbox {info.id} did not complete: it is {origin} again")
            if time.monotonic() >= deadline:
                raise WaitTimeout(f"sandbox {info.id} is still {info.status} after {timeout:g}s (wanted {target})")
            await sleep(POLL_INTERVAL)

    # -- snapshots (spec §2.6) ----------------------------------------------------------------

    async def snapshot(
        self,
        sandbox_id_or_name: str,
        snapshot_type: str = "filesystem",
        *,
        wait: bool = True,
        timeout: float = 300.0,
    ) -> SnapshotInfo:
        """Snapshot a running sandbox: its files (``filesystem``) or files and memory (``memory``).

        With ``wait`` return once the snapshot is ``completed``; :class:`SnapshotError` if
        it failed, :class:`WaitTimeout` after ``timeout`` seconds. Restore it with
        ``create(snapshot_id=...)``; it outlives the sandbox, delete it with
        :meth:`delete_snapshot`.
        """
        if snapshot_type not in SNAPSHOT_TYPES:
            raise InvalidRequest(f"snapshot_type must be one of {', '.join(SNAPSHOT_TYPES)}, not {snapshot_type!r}")
        deadline = time.monotonic() + timeout
        response = await self._request(
            "POST",
            f"/sandboxes/{sandbox_id_or_name}/snapshot",
            json={"snapshot_type": snapshot_type},
            timeout=max(self.config.timeout, timeout + 30),
        )
        data = response.json()
        snapshot_id = data.get("snapshot_id") or data.get("id") if isinstance(data, dict) else None
        if not snapshot_id:
            raise InternalFailure(f"the server answered a snapshot request without a snapshot_id: {data!r}")
        delay = 0.1
        while True:
            info = await self.get_snapshot(snapshot_id)
            if not wait or info.completed:
                return info
            if info.status in ("failed", "deleting"):
                err = SnapshotError(
                    f"snapshot {snapshot_id} of sandbox {sandbox_id_or_name} "
                    + (f"failed: {info.error or 'no reason given'}" if info.status == "failed" else "is being deleted")
                )
                err.snapshot_id = snapshot_id
                raise err
            if time.monotonic() >= deadline:
                raise WaitTimeout(f"snapshot {snapshot_id} is still {info.status} after {timeout:g}s")
            await sleep(delay)
            delay = min(delay * 2, 1.0)

    async def get_snapshot(self, snapshot_id: str) -> SnapshotInfo:
        """Describe one snapshot; :class:`SnapshotNotFoundError` if there is none."""
        response = await self._request("GET", f"/snapshots/{snapshot_id}", not_found=SnapshotNotFoundError)
        return SnapshotInfo.from_json(response.json())

    async def list_snapshots(self, sandbox_id_or_name: str | None = None) -> builtins.list[SnapshotInfo]:
        """Every snapshot of the namespace, or only those taken of one sandbox."""
        path = f"/sandboxes/{sandbox_id_or_name}/snapshots" if sandbox_id_or_name else "/snapshots"
        out: builtins.list[SnapshotInfo] = []
        params: dict[str, Any] = {}
        while True:
            data = (await self._request("GET", path, params=params or None)).json()
            if isinstance(data, dict):
                items = data.get("snapshots", data.get("items", []))
            else:
                items = data
            out.extend(SnapshotInfo.from_json(item) for item in items)
            cursor = data.get("next_cursor") if isinstance(data, dict) else None
            if not cursor or not items:
                return out
            params = {"cursor": cursor}

    async def delete_snapshot(self, snapshot_id: str) -> None:
        """Delete a snapshot (sandboxes restored from it are not affected). Already gone is fine."""
        await self._request("DELETE", f"/snapshots/{snapshot_id}", ok_statuses=(404,))

    # -- copies (spec §2.7) -------------------------------------------------------------------

    async def copy(
        self, sandbox_id_or_name: str, times: int = 1, *, startup_timeout: float = 300.0
    ) -> builtins.list[SandboxInfo]:
        """``times`` new running sandboxes, each a live copy (files and memory) of this one.

        If some copies did not start, :class:`CopyError` is raised; its ``sandboxes`` are the
        copies that did (running: terminate them when done), its ``failures`` the others.
        """
        if times < 1:
            raise InvalidRequest(f"times must be at least 1, not {times}")
        response = await self._request(
            "POST",
            f"/sandboxes/{sandbox_id_or_name}/copy",
            params={"times": times},
            timeout=startup_timeout + 30,
            ok_statuses=(422, 504),
        )
        data = response.json() if response.content else None
        if not isinstance(data, dict) or not isinstance(data.get("sandboxes"), builtins.list):
            raise_for_status(response)
            raise InternalFailure(f"the server answered a copy request without a sandbox list: {data!r}")
        started: builtins.list[SandboxInfo] = []
        failures: builtins.list[dict[str, Any]] = []
        for entry in data["sandboxes"]:
            info = SandboxInfo.from_json(entry)
            if not info.id or info.status in FINAL_STATES:
                failures.append(entry)
                continue
            try:
                started.append(await self._wait_running(info, startup_timeout))
            except SandboxStartError as exc:
                failures.append({**entry, "status": "failed", "error_details": {"message": exc.message}})
        if failures or response.status_code != 200:
            first = next((_failure_message(f) for f in failures), "the server reported a failure")
            raise CopyError(
                f"{len(failures) or 'some'} of {times} copies of sandbox {sandbox_id_or_name} did not start: {first}",
                sandboxes=started,
                failures=failures,
            )
        return started

    # -- the front door: keys and quotas (admin keys), secrets, audit, whoami ----------------

    async def create_key(self, *, project: str = "default", role: str = "member", expires: str | None = None,
                         name: str | None = None) -> dict[str, Any]:
        """A new API key (admins). Its full value (``key``) is in this answer only."""
        body = {"project": project, "role": role, "expires": expires, "name": name}
        return (await self._request("POST", "/keys", json={k: v for k, v in body.items() if v is not None})).json()

    async def list_keys(self, project: str | None = None) -> builtins.list[dict[str, Any]]:
        params = {"project": project} if project else None
        return (await self._request("GET", "/keys", params=params)).json()["keys"]

    async def revoke_key(self, key_id: str) -> None:
        """Revoke a key: its next request anywhere is refused."""
        await self._request("DELETE", f"/keys/{key_id}")

    async def set_quota(self, project: str, **limits: int | float | None) -> dict[str, Any]:
        """Set a project's limits (admins); ``None`` removes one. Names: running_sandboxes,
        vcpus, memory_mb, disk_mb, snapshots, snapshot_bytes, creates_per_minute."""
        return (await self._request("PUT", f"/quotas/{project}", json=limits)).json()

    async def get_quota(self, project: str) -> dict[str, Any]:
        """A project's limits and current use."""
        return (await self._request("GET", f"/quotas/{project}")).json()

    async def set_secret(self, name: str, value: str) -> None:
        """Store a secret of the key's project; ``create(secret_names=[name])`` injects it."""
        await self._request("PUT", f"/secrets/{name}", json={"value": value})

    async def list_secrets(self) -> builtins.list[dict[str, Any]]:
        """Names and update times only: values are never returned."""
        return (await self._request("GET", "/secrets")).json()["secrets"]

    async def delete_secret(self, name: str) -> None:
        await self._request("DELETE", f"/secrets/{name}")

    async def audit(self, *, project: str | None = None, limit: int = 100) -> builtins.list[dict[str, Any]]:
        """The newest state-changing calls (admins)."""
        params: dict[str, Any] = {"limit": limit}
        if project:
            params["project"] = project
        return (await self._request("GET", "/audit", params=params)).json()["entries"]

    async def whoami(self) -> dict[str, Any]:
        """The key this client uses: its id, role, organization and project."""
        return (await self._request("POST", "/platform/v1/keys/introspect")).json()

    async def connect(self, sandbox_id_or_name: str) -> AsyncSandbox:
        """A handle on an existing sandbox; it shares this client, and closing it leaves both running."""
        from .sandbox import AsyncSandbox

        return AsyncSandbox(self, await self.get(sandbox_id_or_name), owns_client=False)


def _sandbox_info_or_none(response: httpx.Response) -> SandboxInfo | None:
    """The ``SandboxInfo`` in a suspend/resume answer, if it carries one."""
    try:
        data = response.json()
    except ValueError:
        return None
    if isinstance(data, dict) and (data.get("id") or data.get("sandbox_id")) and data.get("status"):
        return SandboxInfo.from_json(data)
    return None


def _failure_message(entry: dict[str, Any]) -> str:
    details = entry.get("error_details")
    message = details.get("message") if isinstance(details, dict) else details
    return str(message or entry.get("reason") or entry.get("termination_reason") or entry.get("status") or "failed")
