"""The seccomp profile: containers-common's default (Docker's list), as OCI config.

We do not ship our own syscall list: Debian's ``golang-github-containers-common``
(pulled in by buildah) installs ``/usr/share/containers/seccomp.json``, the profile
podman and buildah use, derived from Docker's default. This module turns its
Docker-style conditions (``includes``/``excludes`` on capabilities and arches) into a
plain OCI ``linux.seccomp`` object for the capabilities a sandbox actually has.
"""

from __future__ import annotations

import functools
import json
import platform
from pathlib import Path
from typing import Any

PROFILE = Path("/usr/share/containers/seccomp.json")
_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
_OCI_ARCHES = {"amd64": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
               "arm64": ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]}


def _applies(rule: dict[str, Any], caps: set[str]) -> bool:
    inc, exc = rule.get("includes") or {}, rule.get("excludes") or {}
    if inc.get("arches") and _ARCH not in inc["arches"]:
        return False
    if exc.get("arches") and _ARCH in exc["arches"]:
        return False
    if inc.get("caps") and not set(inc["caps"]) <= caps:
        return False
    if exc.get("caps") and set(exc["caps"]) & caps:
        return False
    if inc.get("minKernel") or exc.get("minKernel"):
        return True  # this host's kernel (6.x) is newer than any minKernel in the list
    return True


@functools.lru_cache(maxsize=8)
def _load(caps: frozenset[str]) -> str:
    doc = json.loads(PROFILE.read_text())
    syscalls = []
    for rule in doc["syscalls"]:
        if not _applies(rule, set(caps)):
            continue
        entry: dict[str, Any] = {"names": rule["names"], "action": rule["action"]}
        if rule.get("args"):
            entry["args"] = rule["args"]
        if rule.get("errnoRet") is not None:
            entry["errnoRet"] = rule["errnoRet"]
        syscalls.append(entry)
    profile: dict[str, Any] = {
        "defaultAction": doc["defaultAction"],
        "architectures": _OCI_ARCHES.get(_ARCH, []),
        "syscalls": syscalls,
    }
    if doc.get("defaultErrnoRet") is not None:
        profile["defaultErrnoRet"] = doc["defaultErrnoRet"]
    return json.dumps(profile)


def profile(capabilities: list[str]) -> dict[str, Any]:
    """The OCI seccomp object for a process with ``capabilities``."""
    return json.loads(_load(frozenset(capabilities)))
