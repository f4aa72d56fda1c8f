"""envd's ``filesystem.Filesystem`` service, answered by ``fs_helper`` runs in the sandbox.

Watchers (CreateWatcher/GetWatcherEvents/RemoveWatcher, and the WatchDir stream) are
host-side: a snapshot of the directory (names, mtimes, sizes) is taken at creation and
each poll reports the difference as CREATE / WRITE / REMOVE events. Polling, not
inotify, because nothing of ours runs in the sandbox between calls; the price is that
a file created and removed between two polls is not seen, and a rename shows as
REMOVE + CREATE.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from connectrpc.code import Code
from connectrpc.errors import ConnectError
from protobuf import Oneof
from protobuf.wkt.google.protobuf.timestamp_pb import Timestamp

from ..errors import CellboxError
from . import fs_helper, manager_api
from .context import Env, connect_error
from .gen.filesystem import filesystem_pb as pb
from .link import Agent

MAX_PATH = 4096
MAX_WATCHERS = 64  # per sandbox
WATCH_POLL = 0.25  # seconds between polls of a WatchDir stream
_CODES = {"NOT_FOUND": Code.NOT_FOUND, "ALREADY_EXISTS": Code.ALREADY_EXISTS,
          "PERMISSION_DENIED": Code.PERMISSION_DENIED, "NO_SPACE": Code.RESOURCE_EXHAUSTED}
_TYPES = {"file": pb.FileType.FILE, "dir": pb.FileType.DIRECTORY}


def check_path(path: str, what: str = "path") -> str:
    if not path:
        raise ConnectError(Code.INVALID_ARGUMENT, f"{what} is required")
    if "\x00" in path or len(path) > MAX_PATH:
        raise ConnectError(Code.INVALID_ARGUMENT, f"{what}: no NUL bytes, at most {MAX_PATH} bytes")
    if not path.startswith("/"):
        raise ConnectError(Code.INVALID_ARGUMENT, f"{what} must be absolute, got {path!r}")
    return path


async def helper(agent: Agent, op: str, *args: str) -> Any:
    try:
        return await fs_helper.run(agent, op, *args)
    except fs_helper.HelperError as exc:
        raise ConnectError(_CODES.get(exc.code, Code.INVALID_ARGUMENT), f"{exc.code}: {exc.message}") from None
    except CellboxError as exc:
        raise connect_error(exc) from None


def entry(e: Any) -> pb.EntryInfo:
    """One entry of the helper's answer. It ran inside the sandbox, where a tenant that
    is root can tamper with it (``/etc/ld.so.preload``): anything malformed is a clear
    error, never a 500."""
    try:
        link = e.get("symlink")
        info = pb.EntryInfo(
            name=str(e["name"]), type=_TYPES.get(e["type"], pb.FileType.FILE), path=str(e["path"]),
            size=int(e["size"]), mode=int(e["mode"]), permissions=str(e["permissions"]), owner=str(e["owner"]),
            group=str(e["group"]), modified_time=Timestamp.from_nanos(int(e["mtime_ns"])), is_symlink=bool(link),
        )
        if link:
            info.symlink_target = str(link)
    except (AttributeError, KeyError, TypeError, ValueError, OverflowError):
        raise ConnectError(Code.INTERNAL, "the sandbox's filesystem helper answered malformed data") from None
    return info


@dataclass
class Watcher:
    sandbox_id: str
    path: str
    recursive: bool
    seen: dict[str, list[Any]]


def diff(old: dict[str, list[Any]], new: dict[str, list[Any]]) -> list[pb.FilesystemEvent]:
    ev = pb.EventType
    out = [pb.FilesystemEvent(name=n, type=ev.CREATE) for n in new if n not in old]
    out += [pb.FilesystemEvent(name=n, type=ev.WRITE) for n in new
            if n in old and new[n][:2] != old[n][:2] and new[n][2] == "file"]
    out += [pb.FilesystemEvent(name=n, type=ev.REMOVE) for n in old if n not in new]
    return out


class FilesystemService:
    def __init__(self, env: Env) -> None:
        self.env = env
        self.watchers: dict[str, Watcher] = env.state.setdefault("watchers", {})

    async def stat(self, request: pb.StatRequest, ctx: Any) -> pb.StatResponse:
        agent = await self.env.agent(ctx.request_headers)
        return pb.StatResponse(entry=entry(await helper(agent, "stat", check_path(request.path))))

    async def make_dir(self, request: pb.MakeDirRequest, ctx: Any) -> pb.MakeDirResponse:
        agent = await self.env.agent(ctx.request_headers)
        made = await helper(agent, "mkdir", check_path(request.path))
        if made is None:
            raise ConnectError(Code.ALREADY_EXISTS, f"directory {request.path} already exists")
        return pb.MakeDirResponse(entry=entry(made))

    async def move(self, request: pb.MoveRequest, ctx: Any) -> pb.MoveResponse:
        agent = await self.env.agent(ctx.request_headers)
        moved = await helper(agent, "move", check_path(request.source, "source"),
                             check_path(request.destination, "destination"))
        return pb.MoveResponse(entry=entry(moved))

    async def list_dir(self, request: pb.ListDirRequest, ctx: Any) -> pb.ListDirResponse:
        agent = await self.env.agent(ctx.request_headers)
        depth = request.depth or 1
        if depth > 64:
            raise ConnectError(Code.INVALID_ARGUMENT, "depth: at most 64")
        found = await helper(agent, "list", check_path(request.path), str(depth))
        if not isinstance(found, list):  # the helper ran in the sandbox: see entry()
            raise ConnectError(Code.INTERNAL, "the sandbox's filesystem helper answered malformed data")
        return pb.ListDirResponse(entries=[entry(e) for e in found])

    async def remove(self, request: pb.RemoveRequest, ctx: Any) -> pb.RemoveResponse:
        agent = await self.env.agent(ctx.request_headers)
        await helper(agent, "remove", check_path(request.path))
        return pb.RemoveResponse()

    async def _snap(self, agent: Agent, path: str, recursive: bool) -> dict[str, list[Any]]:
        found = await helper(agent, "snap", path, "1" if recursive else "0", str(fs_helper.MAX_SNAPSHOT))
        return found if isinstance(found, dict) else {}

    async def create_watcher(self, request: pb.CreateWatcherRequest, ctx: Any) -> pb.CreateWatcherResponse:
        agent = await self.env.agent(ctx.request_headers)
        path = check_path(request.path)
        self._prune()
        if sum(1 for w in self.watchers.values() if w.sandbox_id == agent.sandbox_id) >= MAX_WATCHERS:
            raise ConnectError(Code.RESOURCE_EXHAUSTED, f"at most {MAX_WATCHERS} watchers per sandbox")
        seen = await self._snap(agent, path, request.recursive)
        wid = secrets.token_hex(12)
        self.watchers[wid] = Watcher(agent.sandbox_id, path, request.recursive, seen)
        return pb.CreateWatcherResponse(watcher_id=wid)

    def _prune(self) -> None:
        """Forget the watchers of sandboxes that are gone (a client that never called
        RemoveWatcher must not grow this for ever)."""
        for wid, w in list(self.watchers.items()):
            rec = manager_api.record(self.env.service, w.sandbox_id)
            if rec is None or rec.status.is_final:
                del self.watchers[wid]

    def _watcher(self, agent: Agent, wid: str) -> Watcher:
        w = self.watchers.get(wid)
        if w is None or w.sandbox_id != agent.sandbox_id:  # another sandbox's watcher: not found
            raise ConnectError(Code.NOT_FOUND, f"watcher {wid!r} not found")
        return w

    async def get_watcher_events(self, request: pb.GetWatcherEventsRequest, ctx: Any) -> pb.GetWatcherEventsResponse:
        agent = await self.env.agent(ctx.request_headers)
        w = self._watcher(agent, request.watcher_id)
        new = await self._snap(agent, w.path, w.recursive)
        events, w.seen = diff(w.seen, new), new
        return pb.GetWatcherEventsResponse(events=events)

    async def remove_watcher(self, request: pb.RemoveWatcherRequest, ctx: Any) -> pb.RemoveWatcherResponse:
        agent = await self.env.agent(ctx.request_headers)
        self._watcher(agent, request.watcher_id)
        del self.watchers[request.watcher_id]
        return pb.RemoveWatcherResponse()

    async def watch_dir(self, request: pb.WatchDirRequest, ctx: Any) -> AsyncIterator[pb.WatchDirResponse]:
        agent = await self.env.agent(ctx.request_headers)
        path = check_path(request.path)
        seen = await self._snap(agent, path, request.recursive)
        yield pb.WatchDirResponse(event=Oneof("start", pb.WatchDirResponse.StartEvent()))
        while True:  # until the client goes away (the stream is cancelled)
            await asyncio.sleep(WATCH_POLL)
            new = await self._snap(agent, path, request.recursive)
            for event in diff(seen, new):
                yield pb.WatchDirResponse(event=Oneof("filesystem", event))
            seen = new
