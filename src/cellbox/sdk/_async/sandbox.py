"""``AsyncSandbox``: one sandbox, its processes, files, terminals and tunnels."""

from __future__ import annotations

import builtins
import os
import tempfile
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Any

import httpx

from .._errors import CopyError, SandboxConnectionError, map_transport_errors, raise_for_status
from .._models import CommandResult, DirectoryEntry, OutputLine, ProcessInfo, SandboxInfo, SnapshotInfo
from .._process_models import HealthCheck, PtySession, RestartPolicy, supervision
from .._shared import (
    CHUNK,
    ProxyTarget,
    RunFolder,
    SSEDecoder,
    network_body,
    output_line,
    process_body,
    proxy_target,
    pty_session_ref,
)
from .client import AsyncSandboxClient
from .lookup import get_or_create
from .process import AsyncProcess
from .pty import AsyncPty
from .tunnel import AsyncTunnel

# No read timeout on streams: a quiet command is not a dead one.
STREAM_TIMEOUT = httpx.Timeout(30.0, read=None)


class AsyncSandbox:
    """A running sandbox.

    Make one with :meth:`create` (a new sandbox) or :meth:`connect` (an existing one, by
    ID or name). As a context manager, a sandbox from ``create`` without a name is
    terminated on exit; named sandboxes and ``connect`` handles are only closed.
    """

    def __init__(
        self, client: AsyncSandboxClient, info: SandboxInfo, *, owns_client: bool, ephemeral: bool = False
    ) -> None:
        self.client = client
        self._info = info
        self._owns_client = owns_client
        self._terminate_on_exit = ephemeral and info.name is None
        self._target: ProxyTarget | None = None

    def __repr__(self) -> str:
        name = f" name={self.name!r}" if self.name else ""
        return f"<{type(self).__name__} id={self.id}{name} status={self.status}>"

    # -- lifecycle ---------------------------------------------------------------------------

    @classmethod
    async def create(
        cls,
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
        startup_timeout: float = 300.0,
        api_url: str | None = None,
        api_key: str | None = None,
        secret_names: Sequence[str] | None = None,
    ) -> AsyncSandbox:
        """Create a sandbox and return once it is running.

        ``timeout_secs`` bounds its life (absent: no limit); a ``name`` makes it findable
        with :meth:`connect` and keeps it alive past a ``with`` block. ``cpus`` and
        ``memory_mb`` default to 1.0 and 1024. With ``snapshot_id`` it starts from that
        snapshot (see :meth:`snapshot`): its files and, for a memory snapshot, its running
        processes; left at None, ``cpus``/``memory_mb`` are then the snapshot's.
        """
        client = AsyncSandboxClient(api_url, api_key)
        try:
            info = await client.create(
                image,
                cpus,
                memory_mb,
                disk_mb,
                timeout_secs,
                name,
                entrypoint,
                exposed_ports,
                allow_unauthenticated_access=allow_unauthenticated_access,
                allow_internet_access=allow_internet_access,
                allow_out=allow_out,
                deny_out=deny_out,
                snapshot_id=snapshot_id,
                startup_timeout=startup_timeout,
                secret_names=secret_names,
            )
        except BaseException:
            await client.close()
            raise
        return cls(client, info, owns_client=True, ephemeral=True)

    @classmethod
    async def connect(
        cls, sandbox_id_or_name: str, *, api_url: str | None = None, api_key: str | None = None
    ) -> AsyncSandbox:
        """A handle on an existing sandbox (by ID or name); :class:`SandboxNotFoundError` if none."""
        client = AsyncSandboxClient(api_url, api_key)
        try:
            info = await client.get(sandbox_id_or_name)
        except BaseException:
            await client.close()
            raise
        return cls(client, info, owns_client=True)

    @classmethod
    async def get_or_create(cls, name: str, *, resume: bool = True, api_url: str | None = None,
                            api_key: str | None = None, **create: Any) -> AsyncSandbox:
        """The live sandbox called ``name`` (resumed if suspended), else a new one (``lookup.py``)."""
        return await get_or_create(cls, name, resume=resume, api_url=api_url, api_key=api_key, **create)  # type: ignore[no-any-return]

    async def __aenter__(self) -> AsyncSandbox:
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            if self._terminate_on_exit and self.name is None:
                await self.terminate()
        finally:
            await self.close()

    async def close(self) -> None:
        """Release this handle's connections; the sandbox keeps running."""
        if self._owns_client:
            await self.client.close()

    @property
    def id(self) -> str:
        return self._info.id

    @property
    def name(self) -> str | None:
        return self._info.name

    @property
    def status(self) -> str:
        """The status as last seen (refreshed by :meth:`info`)."""
        return self._info.status

    @property
    def sandbox_url(self) -> str | None:
        return self._info.sandbox_url

    async def info(self) -> SandboxInfo:
        """Fetch the sandbox's current description (and refresh ``status``/``name``)."""
        self._info = await self.client.get(self.id)
        self._target = None
        return self._info

    async def terminate(self) -> None:
        """Terminate the sandbox (everything in it is lost)."""
        await self.client.delete(self.id)
        self._info = SandboxInfo.from_json({**self._info.raw, "id": self.id, "status": "terminated"})

    async def set_name(self, name: str) -> SandboxInfo:
        """Name (or rename) the sandbox; a named sandbox outlives ``with`` blocks."""
        self._info = await self.client.update(self.id, name=name)
        return self._info

    async def expose_ports(
        self, ports: Iterable[int], *, allow_unauthenticated_access: bool | None = None
    ) -> SandboxInfo:
        """Add ``ports`` to the ports the proxy routes to this sandbox."""
        current = (await self.info()).exposed_ports
        self._info = await self.client.update(
            self.id,
            exposed_ports=set(current) | set(ports),
            allow_unauthenticated_access=allow_unauthenticated_access,
        )
        return self._info

    async def unexpose_ports(self, ports: Iterable[int]) -> SandboxInfo:
        """Stop routing ``ports`` to this sandbox."""
        current = (await self.info()).exposed_ports
        self._info = await self.client.update(self.id, exposed_ports=set(current) - set(ports))
        return self._info

    async def update_network(
        self,
        *,
        allow_internet_access: bool = True,
        allow_out: Sequence[str] | None = None,
        deny_out: Sequence[str] | None = None,
    ) -> SandboxInfo:
        """Replace the egress policy while the sandbox runs (atomically; established
        connections stay). A host name that does not resolve is refused and the old
        policy kept."""
        self._info = await self.client.update(
            self.id, network=network_body(allow_internet_access, allow_out, deny_out)
        )
        return self._info

    async def clear_network(self) -> SandboxInfo:
        """Remove the egress policy: unrestricted internet access again."""
        self._info = await self.client.update(self.id, network=None)
        return self._info

    # -- memory state: suspend, resume, snapshots, copies ----------------------------------------

    def _set_info(self, info: SandboxInfo) -> SandboxInfo:
        self._info = info
        self._target = None  # a resumed sandbox may be reached another way
        return info

    async def suspend(self, wait: bool = True, timeout: float = 300.0) -> SandboxInfo:
        """Suspend the sandbox (it must be named): memory and files go to disk, nothing runs.

        With ``wait`` return once it is ``suspended``; :meth:`resume` brings it back as it was.
        """
        return self._set_info(await self.client.suspend(self.id, wait=wait, timeout=timeout))

    async def resume(self, wait: bool = True, timeout: float = 300.0) -> SandboxInfo:
        """Resume the suspended sandbox; with ``wait`` return once it is ``running`` again."""
        return self._set_info(await self.client.resume(self.id, wait=wait, timeout=timeout))

    async def snapshot(
        self, snapshot_type: str = "filesystem", wait: bool = True, timeout: float = 300.0
    ) -> SnapshotInfo:
        """Snapshot the sandbox's files (``filesystem``) or files and memory (``memory``).

        The sandbox runs on. With ``wait`` return once the snapshot is ``completed``
        (:class:`SnapshotError` if it failed). Start new sandboxes from it with
        ``Sandbox.create(snapshot_id=info.id)``; delete it with
        ``client.delete_snapshot(info.id)`` (it outlives this sandbox).
        """
        return await self.client.snapshot(self.id, snapshot_type, wait=wait, timeout=timeout)

    async def list_snapshots(self) -> builtins.list[SnapshotInfo]:
        """The snapshots taken of this sandbox."""
        return await self.client.list_snapshots(self.id)

    async def copy(self, times: int = 1, startup_timeout: float = 300.0) -> builtins.list[AsyncSandbox]:
        """``times`` new running sandboxes, each a live copy of this one (files and processes).

        Each copy has its own ID, no name, and its own connection pool: like a sandbox from
        :meth:`create`, it is terminated when its ``with`` block ends. If some copies did not
        start, :class:`CopyError` is raised with the handles of those that did in ``sandboxes``.
        """
        try:
            infos = await self.client.copy(self.id, times, startup_timeout=startup_timeout)
        except CopyError as exc:
            exc.sandboxes = [self._sibling(info) for info in exc.sandboxes]
            raise
        return [self._sibling(info) for info in infos]

    def _sibling(self, info: SandboxInfo) -> AsyncSandbox:
        config = self.client.config
        client = AsyncSandboxClient(config.api_url, config.api_key, config.timeout)
        return type(self)(client, info, owns_client=True, ephemeral=True)

    # -- talking to the agent through the proxy ------------------------------------------------

    def _proxy(self) -> ProxyTarget:
        if self._target is None:
            self._target = proxy_target(self.id, self._info.sandbox_url, self._info.routing_hint,
                                        self.client.config.api_key)
        return self._target

    async def _agent(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        content: bytes | None = None,
        timeout: httpx.Timeout | float | None = None,
    ) -> httpx.Response:
        target = self._proxy()
        with map_transport_errors(f"{method} {path} on sandbox {self.id}"):
            response = await self.client._http.request(
                method,
                target.base_url + path,
                params=params,
                json=json,
                content=content,
                headers=target.headers,
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
        raise_for_status(response)
        return response

    async def _follow(self, path: str) -> AsyncIterator[OutputLine]:
        """Yield the output lines of a follow SSE stream until ``eof`` (or the stream ends)."""
        target = self._proxy()
        decoder = SSEDecoder()
        with map_transport_errors(f"following {path} on sandbox {self.id}"):
            async with self.client._http.stream(
                "GET",
                target.base_url + path,
                headers={**target.headers, "Accept": "text/event-stream"},
                timeout=STREAM_TIMEOUT,
            ) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise_for_status(response)
                async for raw in response.aiter_lines():
                    event = decoder.feed(raw)
                    if event is None:
                        continue
                    if event[0] == "eof":
                        return
                    line = output_line(event[1])
                    if line is not None:
                        yield line

    # -- commands and processes --------------------------------------------------------------

    async def run(
        self,
        command: str | Sequence[str],
        args: Sequence[str] | None = None,
        env: Mapping[str, str] | None = None,
        working_dir: str | None = None,
        timeout: float | None = None,
        user: str | None = None,
        *,
        on_output: Callable[[OutputLine], None] | None = None,
    ) -> CommandResult:
        """Run a command to completion and return its exit code and output.

        ``command`` is a program (``run("ls", ["-l", "/"])``, no shell) or an argv list.
        ``timeout`` (seconds) kills the process tree and sets ``timed_out``. ``on_output``
        is called with each line as it arrives.
        """
        body = process_body(command, args, env, working_dir, user)
        if timeout is not None:
            body["timeout"] = float(timeout)
        target = self._proxy()
        folder, decoder = RunFolder(), SSEDecoder()
        with map_transport_errors(f"running {body['command']!r} in sandbox {self.id}"):
            async with self.client._http.stream(
                "POST",
                target.base_url + "/api/v1/processes/run",
                json=body,
                headers={**target.headers, "Accept": "text/event-stream"},
                timeout=STREAM_TIMEOUT,
            ) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise_for_status(response)
                async for raw in response.aiter_lines():
                    event = decoder.feed(raw)
                    if event is not None:
                        line = folder.feed(event[1])
                        if line is not None and on_output is not None:
                            on_output(line)
                    if folder.final is not None:
                        break
        result = folder.result()
        if result is None:
            raise SandboxConnectionError(f"the run stream of {body['command']!r} ended without an exit status")
        return result

    async def start_process(
        self,
        command: str | Sequence[str],
        args: Sequence[str] | None = None,
        env: Mapping[str, str] | None = None,
        working_dir: str | None = None,
        user: str | None = None,
        *,
        stdin_mode: str = "closed",
        stdout_mode: str = "capture",
        stderr_mode: str = "capture",
        name: str | None = None,
        restart: RestartPolicy | str | Mapping[str, Any] | None = None,
        max_restarts: int | None = None,
        health_check: HealthCheck | Mapping[str, Any] | None = None,
    ) -> AsyncProcess:
        """Start a process in the background; ``stdin_mode="pipe"`` to write to its stdin later.

        Any of ``name``, ``restart`` (a policy name or :class:`RestartPolicy`),
        ``max_restarts`` or ``health_check`` makes it a managed process the agent
        supervises: restarted by its policy (``on_failure`` by default), probed, and
        reachable by ``name`` (``get_process(name)``, unique among live processes).
        """
        extra: dict[str, Any] = {"name": name, **supervision(restart, max_restarts, health_check)}
        if stdin_mode != "closed":
            extra["stdin_mode"] = stdin_mode
        if stdout_mode != "capture":
            extra["stdout_mode"] = stdout_mode
        if stderr_mode != "capture":
            extra["stderr_mode"] = stderr_mode
        body = process_body(command, args, env, working_dir, user, **extra)
        info = ProcessInfo.from_json((await self._agent("POST", "/api/v1/processes", json=body)).json())
        return AsyncProcess(self, info.pid, info)

    async def list_processes(self) -> builtins.list[ProcessInfo]:
        """Every process the agent knows about, running or finished."""
        data = (await self._agent("GET", "/api/v1/processes")).json()
        return [ProcessInfo.from_json(p) for p in data.get("processes", [])]

    def get_process(self, pid_or_name: int | str) -> AsyncProcess:
        """A handle on a process by PID or managed-process name (no request is made)."""
        return AsyncProcess(self, pid_or_name)

    # -- files -------------------------------------------------------------------------------

    async def read_file(self, path: str, *, max_bytes: int | None = None) -> bytes:
        """The contents of the file at ``path`` (absolute) in the sandbox.

        With ``max_bytes``, at most ``max_bytes + 1`` bytes are read (streamed, then the
        download is cut): a result longer than ``max_bytes`` means the file is bigger, and
        a caller with a memory bound (the MCP server) never holds a huge file whole.
        """
        if max_bytes is None:
            return (await self._agent("GET", "/api/v1/files", params={"path": path})).content
        target, data = self._proxy(), bytearray()
        with map_transport_errors(f"reading {path} from sandbox {self.id}"):
            async with self.client._http.stream(
                "GET", target.base_url + "/api/v1/files", params={"path": path}, headers=target.headers,
                timeout=STREAM_TIMEOUT,
            ) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise_for_status(response)
                async for chunk in response.aiter_bytes(min(CHUNK, max_bytes + 1)):
                    data += chunk
                    if len(data) > max_bytes:
                        break
        return bytes(data[: max_bytes + 1])

    async def write_file(self, path: str, data: bytes | str) -> None:
        """Create or replace the file at ``path``; parent directories are made."""
        payload = data.encode() if isinstance(data, str) else bytes(data)
        await self._agent("PUT", "/api/v1/files", params={"path": path}, content=payload)

    async def delete_file(self, path: str) -> None:
        """Delete a file (or, recursively, a directory)."""
        await self._agent("DELETE", "/api/v1/files", params={"path": path})

    async def list_directory(self, path: str) -> builtins.list[DirectoryEntry]:
        """The entries of the directory at ``path``."""
        data = (await self._agent("GET", "/api/v1/files/list", params={"path": path})).json()
        return [DirectoryEntry.from_json(e) for e in data.get("entries", [])]

    async def upload_file(self, local_path: str | os.PathLike[str], remote_path: str) -> int:
        """Stream a local file into the sandbox (any size, 1 MiB at a time); return its size."""
        target = self._proxy()
        with open(local_path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            with map_transport_errors(f"uploading to {remote_path} in sandbox {self.id}"):
                response = await self.client._http.request(
                    "PUT",
                    target.base_url + "/api/v1/files",
                    params={"path": remote_path},
                    content=_file_chunks(f),
                    headers={**target.headers, "Content-Length": str(size)},
                    timeout=STREAM_TIMEOUT,
                )
        raise_for_status(response)
        return size

    async def download_file(self, remote_path: str, local_path: str | os.PathLike[str]) -> int:
        """Stream a file out of the sandbox into ``local_path`` (replaced atomically); return its size."""
        target = self._proxy()
        local = os.fspath(local_path)
        fd, tmp = tempfile.mkstemp(prefix=".cellbox-", suffix=".part", dir=os.path.dirname(os.path.abspath(local)))
        size = 0
        try:
            with os.fdopen(fd, "wb") as f:
                with map_transport_errors(f"downloading {remote_path} from sandbox {self.id}"):
                    async with self.client._http.stream(
                        "GET",
                        target.base_url + "/api/v1/files",
                        params={"path": remote_path},
                        headers=target.headers,
                        timeout=STREAM_TIMEOUT,
                    ) as response:
                        if response.status_code >= 400:
                            await response.aread()
                            raise_for_status(response)
                        async for chunk in response.aiter_bytes(CHUNK):
                            f.write(chunk)
                            size += len(chunk)
            os.chmod(tmp, 0o644)
            os.replace(tmp, local)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        return size

    # -- terminals and tunnels -----------------------------------------------------------------

    async def pty(
        self,
        command: str = "/bin/bash",
        args: Sequence[str] | None = None,
        env: Mapping[str, str] | None = None,
        working_dir: str | None = None,
        rows: int = 24,
        cols: int = 80,
    ) -> AsyncPty:
        """Start ``command`` on a pseudo-terminal and attach to it (see :class:`AsyncPty`)."""
        body: dict[str, Any] = {"command": command, "args": list(args or []), "rows": rows, "cols": cols}
        if env:
            body["env"] = dict(env)
        if working_dir:
            body["working_dir"] = working_dir
        data = (await self._agent("POST", "/api/v1/pty", json=body)).json()
        return await AsyncPty.attach(self, data["session_id"], data["token"])

    async def list_ptys(self) -> builtins.list[PtySession]:
        """The terminal sessions of this sandbox, live and ended (no tokens)."""
        data = (await self._agent("GET", "/api/v1/pty")).json()
        return [PtySession.from_json(s) for s in data.get("sessions", []) if isinstance(s, dict)]

    async def attach_pty(self, session_id: str, token: str) -> AsyncPty:
        """Attach to an existing session with the token its creator got."""
        return await AsyncPty.attach(self, pty_session_ref(session_id), token)

    async def kill_pty(self, session_id: str) -> None:
        """End a terminal session (its process group is killed)."""
        await self._agent("DELETE", f"/api/v1/pty/{pty_session_ref(session_id)}")

    async def create_tunnel(self, remote_port: int, local_port: int = 0, local_host: str = "127.0.0.1") -> AsyncTunnel:
        """Listen on ``local_host:local_port`` (0: any free port) and relay each connection to
        ``remote_port`` inside the sandbox. Close the tunnel (or leave its ``with`` block) to stop."""
        return await AsyncTunnel.open(self, remote_port, local_port, local_host)


async def _file_chunks(f: Any) -> AsyncIterator[bytes]:
    # Local disk reads are short; they are done inline, also in the async flavour.
    while chunk := f.read(CHUNK):
        yield chunk
