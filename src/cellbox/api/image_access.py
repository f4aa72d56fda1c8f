"""Images per project, applied in front of the shared catalog (issue 12, gap 1).

The manager keeps one catalog of names; the door's ``ImageOwners`` table says whose
each one is. These checks run in the image routes and the create route before the
manager is called, so the manager (being redesigned) needs no change. Without the
door (``create_app(service, None)``: unit tests) every check passes.

* list: public images plus the project's own (admins: all);
* describe, boot (create), warm-pool claim: 404 for another project's private image,
  the same answer as for a name nobody has, so names reveal nothing;
* replace, delete, pre-boot, warm-pool size: the owner project (admins: any); a public
  image is admin-only (403 ``ADMIN_REQUIRED``);
* build/pull/register under a name another project owns: 409 ``IMAGE_EXISTS`` (names
  are one namespace per server; this tells a member only that the name is taken).
"""

from __future__ import annotations

from fastapi import Request

from ..auth.image_owners import ImageOwners
from ..auth.keys import Principal
from ..errors import AdminRequired, CellboxError, ImageExists, ImageNotFound
from ..images import refs


def _owners(request: Request) -> ImageOwners | None:
    door = request.app.state.door
    return door.images if door is not None else None


def _who(request: Request) -> tuple[Principal | None, str]:
    state = request.scope.get("state", {})
    return state.get("principal"), state.get("project") or request.path_params.get("namespace", "default")


def _canon(name: str) -> str | None:
    try:
        return refs.canonical(name, field="name")
    except CellboxError:
        return None  # not an image name: the manager answers it with its own 400


def visible(request: Request, name: str) -> bool:
    owners, canon = _owners(request), _canon(name)
    if owners is None or canon is None:
        return True
    principal, project = _who(request)
    return owners.visible(canon, principal, project)


def check_visible(request: Request, name: str) -> None:
    """404 unless the request's project may see and boot ``name``."""
    if not visible(request, name):
        raise ImageNotFound(name)


def check_change(request: Request, name: str) -> None:
    """404 for an image the project cannot see, 403 for a public one (admins only)."""
    check_visible(request, name)
    owners, canon = _owners(request), _canon(name)
    if owners is None or canon is None:
        return
    principal, project = _who(request)
    if not owners.may_change(canon, principal, project):
        raise AdminRequired()


def check_new_name(request: Request, name: str, exists: bool) -> None:
    """Before a build/pull/register under ``name`` (``exists``: the catalog has it)."""
    owners, canon = _owners(request), _canon(name)
    if owners is None or canon is None or not exists:
        return
    principal, project = _who(request)
    if not owners.visible(canon, principal, project):
        raise ImageExists(name)
    check_change(request, name)


def record(request: Request, name: str) -> None:
    """After an image was made: a member's is its project's; an admin's is public,
    unless made under another project's namespace path (then that project's)."""
    owners = _owners(request)
    if owners is None:
        return
    principal, project = _who(request)
    public = principal is None or (principal.is_admin and project == principal.project)
    owners.set(name, project, public)


def forget(request: Request, name: str) -> None:
    owners, canon = _owners(request), _canon(name)
    if owners is not None and canon is not None:
        owners.drop(canon)
