"""The build operations of Tensorlake's CAS Image Service view (``api/image_service.py``).

The tensorlake SDK's ``Image(...).build()`` (and ``tl sbx image create``) admit a build,
upload its context to a URL the server hands out, seal it with the tar's sha256, then
poll the build until it is ``succeeded`` and read the published image. A build here is
a record in memory (it lives minutes; a server restart loses the unfinished ones, whose
clients then see 404 and fail clearly) around our own buildah build
(``ImageManager.build``).

Why a capability URL: the SDK uploads the context with a bare HTTP client (no
``Authorization`` header, as for a presigned object-store URL), so the URL itself is
the credential: 32 random bytes, good for one upload to one build of one project,
compared in constant time. Bounds a hostile tenant cannot pass: ``MAX_OPEN`` unsealed
builds per project, each expiring after ``UPLOAD_TTL``; finished builds are kept
``KEEP_DONE`` for the client's last polls.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import Conflict, LimitExceeded, NotFound

MAX_OPEN = 16  # builds awaiting their context, per project
UPLOAD_TTL = 3600.0  # seconds an unsealed build waits for its context
KEEP_DONE = 3600.0  # seconds a finished build stays readable
DEADLINE = 30 * 60.0  # the operation deadline the SDK is told (its own poll limit)
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})


class BuildNotFound(NotFound):
    def __init__(self, build_id: str) -> None:
        super().__init__(f"build {build_id!r} not found")


class BuildInProgress(Conflict):
    """Tensorlake's ``image_build_in_progress`` conflict, naming the active build (the
    route answers it with :meth:`to_dict`'s fields, which the SDK's typed error reads)."""

    def __init__(self, active: "Build") -> None:
        super().__init__(f"image {active.name!r} has a build in progress: {active.build_id}")
        self.active = active

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "code": "image_build_in_progress", "image_name": self.active.name, "active_build_id": self.active.build_id,
                "active_kind": self.active.kind, "active_status": self.active.status}


@dataclass
class Build:
    build_id: str
    project: str
    name: str  # the image name, as the client registered it
    kind: str  # dockerfile | import
    dockerfile_path: str = "Dockerfile"
    build_args: dict[str, str] = field(default_factory=dict)
    parents: list[dict[str, str]] = field(default_factory=list)
    image_ref: str | None = None  # import builds: the registry reference
    status: str = "pending"
    phase: str = "awaiting_context"
    error: str | None = None
    image_id: str | None = None
    result: dict[str, Any] | None = None  # the published image (ImageServiceImage)
    token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    archive: Path | None = None  # the uploaded context tar
    digest: str | None = None  # its sha256, as uploaded
    idempotency_key: str | None = None
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    lines: list[str] = field(default_factory=list)
    task: asyncio.Task[Any] | None = field(default=None, repr=False)
    done: asyncio.Event = field(default_factory=asyncio.Event, repr=False)  # set when terminal

    def set(self, *, status: str | None = None, phase: str | None = None, error: str | None = None) -> None:
        if status is not None:
            self.status = status
        if phase is not None:
            self.phase = phase
        if error is not None:
            self.error = error
        self.updated = time.time()
        if self.status in TERMINAL:
            self.done.set()

    def to_wire(self) -> dict[str, Any]:
        """``ImageBuildInfo`` as the SDK's Rust core reads it (snake_case, times in ms)."""
        return {
            "build_id": self.build_id, "kind": self.kind, "name": self.name, "status": self.status,
            "phase": self.phase, "attempt_no": 1 if self.status != "pending" else 0,
            "builder_sandbox_id": None, "error": self.error, "image_id": self.image_id, "result": self.result,
            "operation_deadline_ms": int((self.created + DEADLINE) * 1000),
            "created_at_ms": int(self.created * 1000), "updated_at_ms": int(self.updated * 1000),
        }


class Builds:
    """Every build operation of the server, by ID; each belongs to one project."""

    def __init__(self) -> None:
        self._by_id: dict[str, Build] = {}

    def admit(self, build: Build) -> Build:
        """Add a new build: the same ``Idempotency-Key`` answers the build it made; a name
        with an unfinished build is a 409; at most ``MAX_OPEN`` unsealed per project."""
        self.expire()
        mine = [b for b in self._by_id.values() if b.project == build.project]
        if build.idempotency_key:
            for b in mine:
                if b.idempotency_key == build.idempotency_key:
                    return b
        for b in mine:
            if b.name == build.name and b.status not in TERMINAL:
                raise BuildInProgress(b)
        if sum(b.phase == "awaiting_context" for b in mine) >= MAX_OPEN:
            raise LimitExceeded(f"this project has {MAX_OPEN} builds waiting for their context; seal or cancel one")
        self._by_id[build.build_id] = build
        return build

    def get(self, build_id: str, project: str) -> Build:
        """A build of ``project`` (another project's is a 404, like one nobody has)."""
        build = self._by_id.get(build_id)
        if build is None or build.project != project:
            raise BuildNotFound(build_id)
        return build

    def by_token(self, build_id: str, token: str) -> Build:
        build = self._by_id.get(build_id)
        if build is None or not hmac.compare_digest(build.token.encode(), token.encode()):
            raise BuildNotFound(build_id)
        return build

    def expire(self) -> None:
        now = time.time()
        for build_id, b in list(self._by_id.items()):
            stale = (b.phase == "awaiting_context" and now - b.created > UPLOAD_TTL) or (
                b.status in TERMINAL and now - b.updated > KEEP_DONE)
            if stale:
                if b.archive is not None:
                    b.archive.unlink(missing_ok=True)
                del self._by_id[build_id]
