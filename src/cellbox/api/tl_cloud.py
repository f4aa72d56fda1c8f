"""Tensorlake cloud services the tensorlake SDK calls that cellbox does not serve, each
answered with a 400 ``NOT_SUPPORTED`` that says what to use instead (rather than a bare
"no route" 404 the user cannot act on).

* ``POST /artifact-storage/v1/token``: the first call of the SDK's ``FilesystemClient``
  (Tensorlake's Artifact Storage, ``tl fs``). It mints a JWT whose claims carry the
  project, for a git-based storage service (default ``https://git.tensorlake.ai``,
  not derived from ``TENSORLAKE_API_URL`` in what the SDK's binary shows) with a
  content-addressed engine of its own (blake3 read-plans, ingest sessions, direct
  object-store uploads). docs/from-tensorlake.md has the request log and what stops
  a compatible server; cellbox's persistent file systems are its volumes.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from ..errors import NotSupported

ARTIFACT_STORAGE = (
    "Tensorlake's Artifact Storage (FilesystemClient, tl fs) is not served by cellbox: its data plane is "
    "a separate git-based storage service. Use cellbox volumes instead: POST /volumes (cellbox volume "
    "create), then Sandbox.create(file_systems=[FileSystemMount(file_system_id=NAME, mount_path=PATH)]) "
    "or attach_file_system; see docs/from-tensorlake.md"
)


async def artifact_storage_token(request: Request) -> None:
    raise NotSupported(ARTIFACT_STORAGE)


def router() -> APIRouter:
    r = APIRouter()
    r.add_api_route("/artifact-storage/v1/token", artifact_storage_token, methods=["POST"])
    return r
