"""Sandbox IDs and every host name derived from them.

One ID keys everything a sandbox owns (design rule 1): its runc container, cgroup,
network namespace, host veth, nftables set elements, rootfs subvolume and state dir.
Because the names are derived, not stored, a crashed server can find and remove
leftovers from the ID alone.

IDs follow Tensorlake's format (21 characters of ``[0-9a-z]``, nanoid-style), so the
``tensorlake`` client, which cannot tell names from IDs otherwise, treats them as IDs.
"""

from __future__ import annotations

import os
import re
import secrets

ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
ID_LENGTH = 21
_ID_RE = re.compile(r"^[0-9a-z]{21}$")
# Tensorlake's CLI rule for names, which also keeps names apart from IDs.
_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,62}$")


def new_id() -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(ID_LENGTH))


def is_id(value: str) -> bool:
    return bool(_ID_RE.match(value))


def name_problem(name: str) -> str | None:
    """Why ``name`` is not a valid sandbox name, or None if it is."""
    if not _NAME_RE.match(name):
        return "name must start with a lowercase letter and contain only a-z, 0-9 and '-', at most 63 characters"
    if name.endswith("-"):
        return "name must not end with '-'"
    if is_id(name):
        return "name must not look like a sandbox ID (21 lowercase letters and digits)"
    return None


# The prefix of every host-wide name derived from an ID (veth ``cb<id>``, netns
# ``cb-<id>``) and the cgroup parent (``/cellbox/<id>``). A second instance on one host
# (its own data dir, bridge and nft tables, as benchmarks and experiments run) needs
# its own of both: each instance's bridge table drops frames from ports named like its
# own that it does not know, and its start-up reconcile takes any ``cb-`` netns or
# ``/cellbox`` cgroup without a record of its own for a leftover and removes it -- a
# second instance sharing the names deleted the first one's netns names.
VETH_PREFIX = os.environ.get("CELLBOX_VETH_PREFIX", "cb")
if not re.fullmatch(r"[a-z]{2}", VETH_PREFIX):
    raise ValueError("CELLBOX_VETH_PREFIX must be two lowercase letters")
CGROUP_PARENT = os.environ.get("CELLBOX_CGROUP_PARENT", "cellbox")
if not re.fullmatch(r"[a-z][a-z0-9-]{0,30}", CGROUP_PARENT):
    raise ValueError("CELLBOX_CGROUP_PARENT must be a lowercase name (letters, digits, '-')")
NETNS_PREFIX = f"{VETH_PREFIX}-"


def netns(sandbox_id: str) -> str:
    return f"{NETNS_PREFIX}{sandbox_id}"


def host_veth(sandbox_id: str) -> str:
    # IFNAMSIZ is 16 including the NUL: the 2-letter prefix + 13 characters of the ID.
    return f"{VETH_PREFIX}{sandbox_id[:13]}"


def cgroup_path(sandbox_id: str) -> str:
    return f"/{CGROUP_PARENT}/{sandbox_id}"


def container(sandbox_id: str) -> str:
    """The runc container name; equal to the ID (one incarnation at a time)."""
    return sandbox_id
