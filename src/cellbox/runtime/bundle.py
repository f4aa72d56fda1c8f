"""OCI runtime bundles: one ``config.json`` per sandbox, written before ``runc run``.

The hardening follows Docker's defaults, which the field treats as the baseline for
containers: Docker's capability set (minus ``CAP_NET_RAW``), a seccomp profile built
from moby's (``seccomp.json``), masked and read-only /proc and /sys paths,
``noNewPrivileges``, no devices beyond the standard few, and tmpfs sized from the
memory limit.

Limits go into the config and runc applies them, to cgroup v1 or v2 alike:
``cpus`` as a CFS quota, ``memory_mb`` as a hard limit with swap equal to it (no
swap), ``pids`` as a pids limit. Disk is enforced by storage (a btrfs qgroup).

A user namespace per sandbox (``userns``, see runtime/userns.py): the bundle maps
0..65535 to the sandbox's host range, its rootfs is an idmapped mount made by the
host, and runc makes the network namespace (so it belongs to the user namespace,
which CRIU needs to restore into it), wired by the prestart hook (runtime/nethook.py).
Without ``userns`` the container joins a netns made on the host (``netns_path``).
"""

from __future__ import annotations

import json
import os
import resource
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import agentfs, seccomp, userns

# Docker's default capability set (moby oci/caps/defaults.go): no SYS_ADMIN, SYS_MODULE,
# SYS_PTRACE, NET_ADMIN, SYS_TIME, SYS_BOOT, SYS_RESOURCE, ... and, unlike Docker, no
# NET_RAW: raw and packet sockets let a sandbox forge its source IP and MAC and answer
# ARP for a neighbour's address. ping keeps working through ICMP datagram sockets,
# which net.ipv4.ping_group_range (SYSCTLS) opens to every group, as Docker does.
CAPABILITIES = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
]
# The container's init (the agent) also holds this one, which it drops from its
# bounding set at start so no program it runs has it (agent/hardening.py): a tenant
# process then lacks a capability of the agent's and cannot ptrace it. The seccomp
# profile is computed from CAPABILITIES alone.
AGENT_ONLY_CAPABILITY = "CAP_WAKE_ALARM"
# Per-netns sysctls runc writes inside the container (OCI linux.sysctl), so they hold
# however the netns is made (today network/netns.py, later runc itself for user
# namespaces). The range is 0-65535 and not Docker's 0-2147483647: the kernel refuses
# (EINVAL) a range with a gid the writer's user namespace does not map, and a sandbox
# with its own user namespace maps 65536 ids.
SYSCTLS = {"net.ipv4.ping_group_range": "0 65535"}
MASKED_PATHS = [
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
    "/sys/firmware", "/sys/devices/virtual/powercap", "/proc/sysrq-trigger",
]
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
CFS_PERIOD = 100_000
# /dev/userfaultfd in the devices cgroup, for user-namespace sandboxes only. Why: a
# lazy-pages restore makes each task's userfaultfd from this device (our CRIU patch,
# scripts/criu-patches/0001-*), and runc has moved criu into the sandbox's cgroup
# when it opens it. Safe there: the sandbox's /dev has no such node, and a user
# namespace can neither mknod a device nor mount a devtmpfs, so no tenant process
# can ever open it. (Without a user namespace, CAP_MKNOD could make the node.)
USERFAULTFD_DEVICE = {"allow": True, "type": "c", "major": 10, "minor": 257, "access": "rw"}

# tmpfs pages are charged to the sandbox's memory cgroup, but an OOM kill frees none of
# them: tmpfs able to fill memory_mb would leave the cgroup full and the OOM killer
# taking every process, the agent included. So the two tmpfs a tenant can write are
# sized to at most a quarter of memory_mb plus 4 MiB: /dev/shm gets memory_mb / 4 up to
# Docker's 64 MiB (reached at 256 MiB), /dev only room for device nodes (it was 64 MiB,
# as Docker's, i.e. another /dev/shm). A filler then gets ENOSPC.
DEV_TMPFS_KIB = 4096
SHM_MAX_KIB = 65536
SHM_FULL_AT_MB = SHM_MAX_KIB * 4 // 1024  # memory_mb from which /dev/shm has its full size


def shm_kib(memory_mb: int) -> int:
    """The size of /dev/shm for a sandbox of ``memory_mb``."""
    return min(SHM_MAX_KIB, memory_mb * 1024 // 4)


MIN_SHARES = 2  # the lowest cgroup v1 cpu.shares (v2: runc maps it to cpu.weight 1)


@dataclass(frozen=True)
class Limits:
    cpus: float
    memory_mb: int
    pids: int = 1024
    cpu_shares: int | None = None  # None: the kernel's default weight


def _nofile() -> int:
    # OCI rlimits above the host's hard limit make `runc run` fail (root here lacks
    # CAP_SYS_RESOURCE, hard RLIMIT_NOFILE is 20000).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return min(hard if hard != resource.RLIM_INFINITY else 1 << 20, 1 << 20)


def config(
    *,
    hostname: str,
    rootfs: Path,
    agentfs_tree: Path,
    netns_path: str | None,
    cgroups_path: str,
    limits: Limits,
    agent_port: int,
    criu_config: Path | None = None,
    image_env: list[str] | None = None,
    workdir: str = "/",
    user: str = "",
    agent_secret: str | None = None,
    userns_base: int | None = None,
    hooks: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The bundle config. ``image_env``, ``workdir`` and ``user`` come from the image's
    config (Dockerfile ENV, WORKDIR, USER): the agent passes its environment on to the
    processes it starts, runs them in ``workdir`` and as ``user`` unless told otherwise."""
    nofile = _nofile()
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
           "LANG": "C.UTF-8"}
    for item in image_env or []:
        key, sep, value = item.partition("=")
        if sep and key and not key.startswith("CELLBOX_"):
            env[key] = value
    if user and user not in ("root", "0", "0:0"):
        env["CELLBOX_DEFAULT_USER"] = user
    if agent_secret:
        # The agent takes it out of its environment at start (agent/auth.py), so no
        # child inherits it; never argv: /proc/1/cmdline is readable by the tenant.
        env["CELLBOX_AGENT_SECRET"] = agent_secret
    argv = agentfs.agent_argv(agent_port)
    if workdir and workdir != "/":
        argv += ["--default-workdir", workdir]
    cfg: dict[str, Any] = {
        "ociVersion": "1.0.2",
        # runc hands this file to CRIU on checkpoint/restore (see runtime/checkpoint.py).
        "annotations": {"org.criu.config": str(criu_config)} if criu_config else {},
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": argv,
            "env": [f"{k}={v}" for k, v in env.items()] + agentfs.agent_env(),
            "cwd": "/",
            "capabilities": {k: CAPABILITIES + [AGENT_ONLY_CAPABILITY] for k in ("bounding", "effective", "permitted")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": nofile, "soft": nofile}],
            "noNewPrivileges": True,
        },
        "root": {"path": str(rootfs), "readonly": False},
        "hostname": hostname,
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", f"size={DEV_TMPFS_KIB}k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", f"size={shm_kib(limits.memory_mb)}k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
            {"destination": agentfs.MOUNT_POINT, "type": "bind", "source": str(agentfs_tree),
             "options": ["rbind", "ro", "nosuid", "nodev"]},
        ],
        "linux": {
            "namespaces": [
                {"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"},
                {"type": "cgroup"}, {"type": "network"},
            ],
            "cgroupsPath": cgroups_path,
            "resources": {
                "devices": [{"allow": False, "access": "rwm"}],
                **resources(limits),
            },
            "sysctl": dict(SYSCTLS),
            "maskedPaths": MASKED_PATHS,
            "readonlyPaths": READONLY_PATHS,
            "seccomp": seccomp.profile(CAPABILITIES),
        },
    }
    set_identity(cfg, rootfs=rootfs, netns_path=netns_path, userns_base=userns_base, hooks=hooks)
    return cfg


def has_userns(cfg: dict[str, Any]) -> bool:
    """Whether a bundle config (a sandbox's, a snapshot manifest's) has a user namespace."""
    return any(ns["type"] == "user" for ns in cfg["linux"]["namespaces"])


def set_identity(cfg: dict[str, Any], *, rootfs: Path, netns_path: str | None, userns_base: int | None,
                 hooks: dict[str, Any] | None) -> None:
    """Point ``cfg`` at one sandbox's rootfs, network and id range (a new bundle, or a
    snapshot's bundle restored under a new identity).

    With ``userns_base``: a user namespace with that mapping, and a network namespace
    made by runc (no path); ``hooks`` wire it. Without: the netns at ``netns_path``
    (if any).
    """

    cfg["root"]["path"] = str(rootfs)
    linux = cfg["linux"]
    spaces = [ns for ns in linux["namespaces"] if ns["type"] not in ("user", "network")]
    for key in ("uidMappings", "gidMappings"):
        linux.pop(key, None)
    cfg.pop("hooks", None)
    devices = [d for d in linux["resources"].get("devices", []) if d != USERFAULTFD_DEVICE]
    if userns_base is not None:
        spaces += [{"type": "user"}, {"type": "network"}]
        linux.update(userns.mappings(userns_base))
        devices.append(USERFAULTFD_DEVICE)
        if hooks:
            cfg["hooks"] = hooks
    else:  # the netns made on the host; none given: a fresh one from runc (bench/start.py's raw runc)
        spaces.append({"type": "network", "path": netns_path} if netns_path else {"type": "network"})
    linux["namespaces"] = spaces
    linux["resources"]["devices"] = devices


def mount_points(cfg: dict[str, Any]) -> list[str]:
    """The mount destinations of a bundle config (inside the container's root)."""
    return [m["destination"] for m in cfg.get("mounts", [])]


def resources(limits: Limits) -> dict[str, Any]:
    """The cgroup part of ``linux.resources`` for ``limits``."""
    cpu: dict[str, Any] = {"quota": cpu_quota(limits.cpus), "period": CFS_PERIOD}
    if limits.cpu_shares is not None:
        cpu["shares"] = limits.cpu_shares
    return {
        "memory": {"limit": limits.memory_mb << 20, "swap": limits.memory_mb << 20},
        "cpu": cpu,
        "pids": {"limit": limits.pids},
    }


def cpu_quota(cpus: float) -> int:
    return max(1000, int(cpus * CFS_PERIOD))


def set_limits(bundle_dir: Path, limits: Limits) -> None:
    """Rewrite the limits in an existing bundle's ``config.json`` (a claimed warm sandbox).

    ``runc restore`` (resume, clone, restore from a snapshot) applies the resources of
    this file, not those the container was started with, so it must say what the
    sandbox's record says.
    """
    path = bundle_dir / "config.json"
    cfg = json.loads(path.read_text())
    cfg["linux"]["resources"].update(resources(limits))
    for mount in cfg.get("mounts", []):  # /dev/shm follows memory (a live resize changes it too)
        if mount.get("destination") == "/dev/shm":
            mount["options"] = [o for o in mount.get("options", []) if not o.startswith("size=")] + [
                f"size={shm_kib(limits.memory_mb)}k"]
    write(bundle_dir, cfg)


def write(bundle_dir: Path, cfg: dict[str, Any]) -> Path:
    bundle_dir.mkdir(parents=True, exist_ok=True)
    path = bundle_dir / "config.json"
    tmp = path.with_suffix(".tmp")
    # 0600: the environment carries the agent's secret (runc reads it as root).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(cfg))
    os.chmod(tmp, 0o600)  # an older tmp file may have had another mode
    os.replace(tmp, path)
    return path
