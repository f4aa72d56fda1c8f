"""The seccomp profile: our own (``seccomp.json`` beside this file), as OCI config.

The profile is data in the repo, built from moby's default profile and in its format,
so a change to what sandboxes may call is a reviewed diff (and the pinned list in
``tests/unit/test_seccomp_profile.py`` changes with it). We used to read
containers-common's ``/usr/share/containers/seccomp.json``, which allows ``unshare``
and ``clone`` with namespace flags, ``setns``, the mount family, ``keyctl``,
``pidfd_getfd`` and ``process_vm_*`` without any capability: ``unshare -Urn`` worked
inside a sandbox.

This module resolves the profile's Docker-style conditions (``includes``/``excludes``
on capabilities, architectures and kernel versions) into a plain OCI
``linux.seccomp`` object for the capabilities a sandbox actually has: runc 1.1 reads
only the OCI form.
"""

from __future__ import annotations

import functools
import json
import platform
from pathlib import Path
from typing import Any

PROFILE = Path(__file__).with_name("seccomp.json")
_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
_OCI_ARCHES = {"amd64": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
               "arm64": ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]}
_RULE_KEYS = ("names", "action", "args", "errnoRet")  # what OCI takes from a rule


def _kernel(release: str) -> tuple[int, int]:
    major, _, rest = release.partition(".")
    minor = "".join(ch for ch in rest.split(".")[0] if ch.isdigit()) or "0"
    return int(major), int(minor)


def _applies(rule: dict[str, Any], caps: set[str], arch: str, kernel: tuple[int, int]) -> bool:
    """moby's semantics: every included cap must be held, no excluded one may be."""
    inc, exc = rule.get("includes") or {}, rule.get("excludes") or {}
    if inc.get("arches") and arch not in inc["arches"]:
        return False
    if exc.get("arches") and arch in exc["arches"]:
        return False
    if inc.get("caps") and not set(inc["caps"]) <= caps:
        return False
    if exc.get("caps") and set(exc["caps"]) & caps:
        return False
    if inc.get("minKernel") and kernel < _kernel(inc["minKernel"]):
        return False
    if exc.get("minKernel") and kernel >= _kernel(exc["minKernel"]):
        return False
    return True


def document() -> dict[str, Any]:
    """The profile as committed (comments and conditions included)."""
    doc: dict[str, Any] = json.loads(PROFILE.read_text())
    return doc


@functools.lru_cache(maxsize=8)
def _resolve(caps: frozenset[str], arch: str, kernel: tuple[int, int]) -> str:
    doc = document()
    syscalls = [
        {k: rule[k] for k in _RULE_KEYS if rule.get(k) is not None}
        for rule in doc["syscalls"]
        if _applies(rule, set(caps), arch, kernel)
    ]
    profile: dict[str, Any] = {
        "defaultAction": doc["defaultAction"],
        "defaultErrnoRet": doc["defaultErrnoRet"],
        "architectures": _OCI_ARCHES.get(arch, []),
        "syscalls": syscalls,
    }
    return json.dumps(profile)


def profile(capabilities: list[str], *, arch: str = _ARCH, kernel: str | None = None) -> dict[str, Any]:
    """The OCI seccomp object for a process with ``capabilities`` (on this host's
    architecture and kernel unless told otherwise)."""
    profile: dict[str, Any] = json.loads(_resolve(frozenset(capabilities), arch, _kernel(kernel or platform.release())))
    return profile
