"""The sandbox's seccomp profile, pinned: what it allows is a committed list.

``seccomp_allowed.txt`` (beside this file) is what the profile resolves to for the
sandbox's capability set on x86_64: syscalls allowed unconditionally, those allowed
only with argument checks, and those answering an errno other than the default
EPERM. Any change to the profile or to the capability set that changes it fails
here and shows the diff; if the change is meant, regenerate the file with
``python -m tests.unit.test_seccomp_profile`` and commit both.
"""

from __future__ import annotations

import difflib
import errno
import sys
from pathlib import Path

from cellbox.network import netns
from cellbox.runtime import bundle, seccomp

PINNED = Path(__file__).with_name("seccomp_allowed.txt")
# The reference host: what is pinned must not depend on where the test runs.
ARCH, KERNEL = "amd64", "6.18.0"

# Calls a sandbox's root must never reach (the walls issue, holes 2 and 7).
NEVER = [
    "unshare", "setns", "mount", "umount", "umount2", "fsopen", "fsconfig", "fsmount", "fspick",
    "open_tree", "move_mount", "mount_setattr", "pivot_root", "keyctl", "add_key", "request_key",
    "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register",
    "pidfd_getfd", "kcmp", "process_madvise", "init_module", "finit_module", "delete_module",
    "kexec_load", "kexec_file_load", "reboot", "swapon", "swapoff", "settimeofday", "clock_settime",
    "acct", "syslog", "iopl", "ioperm", "quotactl", "open_by_handle_at", "fanotify_init",
    "sethostname", "setdomainname", "vhangup", "mbind", "set_mempolicy", "clone3",
]


def _arg(a: dict) -> str:
    op = {"SCMP_CMP_EQ": "==", "SCMP_CMP_NE": "!=", "SCMP_CMP_MASKED_EQ": "&"}.get(a["op"], a["op"])
    if a["op"] == "SCMP_CMP_MASKED_EQ":
        return f"arg{a['index']} & {a['value']:#x} == {a.get('valueTwo', 0)}"
    return f"arg{a['index']} {op} {a['value']:#x}"


def render(caps: list[str] = bundle.CAPABILITIES) -> str:
    """The profile for ``caps`` as the pinned text."""
    prof = seccomp.profile(caps, arch=ARCH, kernel=KERNEL)
    plain: set[str] = set()
    checked: list[str] = []
    errnos: list[str] = []
    for rule in prof["syscalls"]:
        if rule["action"] == "SCMP_ACT_ALLOW" and not rule.get("args"):
            plain.update(rule["names"])
        elif rule["action"] == "SCMP_ACT_ALLOW":
            checked += [f"{n}: {' and '.join(_arg(a) for a in rule['args'])}" for n in rule["names"]]
        else:
            code = errno.errorcode.get(rule.get("errnoRet", prof["defaultErrnoRet"]), "?")
            errnos += [f"{n}: {rule['action']} {code}" for n in rule["names"]]
    default = f"{prof['defaultAction']} {errno.errorcode[prof['defaultErrnoRet']]}"
    return "\n".join([
        f"# cellbox sandbox seccomp profile, resolved for {ARCH}, kernel {KERNEL}, capabilities:",
        "# " + " ".join(sorted(caps)),
        f"# default: {default}",
        "[allowed]", *sorted(plain),
        "[allowed with argument checks]", *sorted(checked),
        "[explicit errno]", *sorted(errnos),
    ]) + "\n"


def test_allowed_set_is_pinned():
    want, got = PINNED.read_text(), render()
    diff = "".join(difflib.unified_diff(want.splitlines(True), got.splitlines(True), "committed", "profile"))
    assert got == want, f"the seccomp profile's allowed set changed (regenerate {PINNED.name} if meant):\n{diff}"


def test_dangerous_calls_are_never_allowed():
    prof = seccomp.profile(bundle.CAPABILITIES, arch=ARCH, kernel=KERNEL)
    allowed = {n for r in prof["syscalls"] if r["action"] == "SCMP_ACT_ALLOW" for n in r["names"]}
    assert prof["defaultAction"] == "SCMP_ACT_ERRNO" and prof["defaultErrnoRet"] == errno.EPERM
    assert sorted(set(NEVER) & allowed) == []


def test_clone_only_without_namespace_flags_and_clone3_enosys():
    prof = seccomp.profile(bundle.CAPABILITIES, arch=ARCH, kernel=KERNEL)
    clones = [r for r in prof["syscalls"] if "clone" in r["names"]]
    assert clones == [{"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                       "args": [{"index": 0, "value": 2114060288, "op": "SCMP_CMP_MASKED_EQ"}]}]
    clone3 = [r for r in prof["syscalls"] if "clone3" in r["names"]]
    assert clone3 == [{"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ENOSYS}]


def test_capability_conditions_follow_moby():
    """With CAP_SYS_ADMIN the namespace calls would be allowed and clone unmasked, so
    the conditions are read, not ignored; sandboxes never get CAP_SYS_ADMIN."""
    admin = seccomp.profile([*bundle.CAPABILITIES, "CAP_SYS_ADMIN"], arch=ARCH, kernel=KERNEL)
    allowed = {n for r in admin["syscalls"] if r["action"] == "SCMP_ACT_ALLOW" and not r.get("args") for n in r["names"]}
    assert {"unshare", "setns", "mount", "clone", "clone3"} <= allowed
    assert "CAP_SYS_ADMIN" not in bundle.CAPABILITIES
    ptrace = seccomp.profile(["CAP_SYS_PTRACE"], arch=ARCH, kernel=KERNEL)
    assert any("pidfd_getfd" in r["names"] for r in ptrace["syscalls"])
    old_kernel = seccomp.profile(bundle.CAPABILITIES, arch=ARCH, kernel="4.4.0")
    assert not any("ptrace" in r["names"] for r in old_kernel["syscalls"])


def test_arm64_rules_resolve():
    prof = seccomp.profile(bundle.CAPABILITIES, arch="arm64", kernel=KERNEL)
    names = {n for r in prof["syscalls"] for n in r["names"]}
    assert "set_tls" in names and "arch_prctl" not in names
    assert prof["architectures"] == ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]


def test_no_net_raw_and_ping_group_range_in_the_bundle(tmp_path):
    assert "CAP_NET_RAW" not in bundle.CAPABILITIES
    # network/ cannot import runtime/: the two copies of the sysctls must agree.
    assert bundle.SYSCTLS == netns.SYSCTLS == {"net.ipv4.ping_group_range": "0 65535"}
    cfg = bundle.config(hostname="h", rootfs=tmp_path, agentfs_tree=tmp_path, netns_path="/run/netns/x",
                        cgroups_path="/cellbox/x", limits=bundle.Limits(1, 256), agent_port=9501)
    assert cfg["linux"]["sysctl"] == bundle.SYSCTLS
    assert all("CAP_NET_RAW" not in v for v in cfg["process"]["capabilities"].values())
    assert cfg["linux"]["seccomp"] == seccomp.profile(bundle.CAPABILITIES)


if __name__ == "__main__":
    PINNED.write_text(render())
    sys.stdout.write(f"wrote {PINNED}\n")
