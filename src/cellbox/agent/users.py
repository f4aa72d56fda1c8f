"""Resolve the ``user`` field of a start/run request and build the child env.

Accepted forms (spec section 3.1): ``"root"``, ``"1000"``, ``"1000:1000"``,
``"name"``, ``"name:group"``, or an object ``{"name"|"uid", "gid"?}``.  Names
are looked up with ``pwd``/``grp``, i.e. in the sandbox's own ``/etc/passwd``
because the agent runs inside the container.  A numeric uid unknown to
``/etc/passwd`` gets gid = uid (not gid 0: an unknown user should not land in
the root group) and HOME ``/``.

Omitted user means "do not switch": the child runs as the agent (root in a
sandbox).  The switch itself happens in the forked child before exec via
``subprocess.Popen(user=, group=, extra_groups=)`` (setgroups/setgid/setuid in
that order, done by CPython's async-signal-safe ``_posixsubprocess``).
"""

from __future__ import annotations

import os
import pwd
from typing import Any, Mapping

from .errors import bad_request

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PRIVATE_PREFIX = "CELLBOX_"


class Identity:
    """Who a child runs as.  ``uid is None`` means "inherit the agent's identity"."""

    __slots__ = ("uid", "gid", "groups", "name", "home")

    def __init__(self, uid: int | None, gid: int | None, groups: list[int] | None, name: str | None, home: str) -> None:
        self.uid = uid
        self.gid = gid
        self.groups = groups
        self.name = name
        self.home = home

    def popen_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``subprocess.Popen`` that perform the switch."""
        if self.uid is None:
            return {}
        if os.geteuid() != 0 and self.uid == os.geteuid() and self.gid == os.getegid():
            return {}  # unprivileged agent asked to run as itself: nothing to switch
        kwargs: dict[str, Any] = {"user": self.uid, "group": self.gid}
        if self.groups is not None:
            kwargs["extra_groups"] = self.groups
        return kwargs


def current_identity() -> Identity:
    uid = os.getuid()
    try:
        pw = pwd.getpwuid(uid)
        return Identity(None, None, None, pw.pw_name, pw.pw_dir or "/")
    except KeyError:
        return Identity(None, None, None, None, "/")


def resolve_user(spec: Any) -> Identity:
    """Turn the request's ``user`` value into an Identity (400 on bad input).

    No ``user``: the image's ``USER`` (``CELLBOX_DEFAULT_USER``, set by the runtime
    from the image config), else the agent's own identity."""
    if spec is None:
        spec = os.environ.get("CELLBOX_DEFAULT_USER") or None
    if spec is None:
        return current_identity()
    if isinstance(spec, str):
        if not spec or "\x00" in spec:
            raise bad_request("user must be a non-empty string", "INVALID_USER")
        user_part, sep, group_part = spec.partition(":")
        if sep and not group_part:
            raise bad_request(f"invalid user {spec!r}", "INVALID_USER")
        return _build(user_part, group_part or None)
    if isinstance(spec, dict):
        name = spec.get("name")
        uid = spec.get("uid")
        gid = spec.get("gid")
        if (name is None) == (uid is None):
            raise bad_request("user object needs exactly one of 'name' or 'uid'", "INVALID_USER")
        if name is not None and (not isinstance(name, str) or not name):
            raise bad_request("user.name must be a non-empty string", "INVALID_USER")
        if uid is not None and not _is_int(uid):
            raise bad_request("user.uid must be a non-negative integer", "INVALID_USER")
        if gid is not None and not (_is_int(gid) or (isinstance(gid, str) and gid)):
            raise bad_request("user.gid must be an integer or a group name", "INVALID_USER")
        user_part = name if name is not None else str(uid)
        return _build(user_part, None if gid is None else str(gid))
    raise bad_request("user must be a string or an object", "INVALID_USER")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _build(user_part: str, group_part: str | None) -> Identity:
    pw: pwd.struct_passwd | None
    if user_part.isdigit():
        uid = int(user_part)
        try:
            pw = pwd.getpwuid(uid)
        except KeyError:
            pw = None
    else:
        try:
            pw = pwd.getpwnam(user_part)
        except KeyError:
            raise bad_request(f"unknown user {user_part!r}", "INVALID_USER") from None
        uid = pw.pw_uid
    if group_part is None:
        gid = pw.pw_gid if pw is not None else uid
    elif group_part.isdigit():
        gid = int(group_part)
    else:
        import grp

        try:
            gid = grp.getgrnam(group_part).gr_gid
        except KeyError:
            raise bad_request(f"unknown group {group_part!r}", "INVALID_USER") from None
    if pw is not None:
        try:
            groups = sorted(set(os.getgrouplist(pw.pw_name, gid)))
        except OSError:
            groups = [gid]
        return Identity(uid, gid, groups, pw.pw_name, pw.pw_dir or "/")
    return Identity(uid, gid, [gid], None, "/")


def build_env(identity: Identity, inherited: Mapping[str, str] | None, overrides: Mapping[str, str]) -> dict[str, str]:
    """Child environment: defaults < inherited (image ENV) < per-user vars < request.

    ``inherited`` is the agent's own environment unless ``--no-inherit-env``:
    inside a sandbox that is the image's ``ENV``, which users expect to apply
    to their commands just like ``docker exec`` does.  Variables starting with
    ``CELLBOX_`` are agent-private and never passed on.
    """
    env = {"PATH": DEFAULT_PATH, "LANG": "C.UTF-8", "TERM": "xterm"}
    if inherited:
        env.update((k, v) for k, v in inherited.items() if not k.startswith(PRIVATE_PREFIX))
    env["HOME"] = identity.home
    if identity.name:
        env["USER"] = identity.name
        env["LOGNAME"] = identity.name
    env.update(overrides)
    return env
