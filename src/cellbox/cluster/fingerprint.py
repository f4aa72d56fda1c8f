"""What this host is, as far as a memory snapshot cares: kernel, CPU features, CRIU.

CRIU restores a process's memory and registers verbatim: a program that probed AVX-512
at start and is restored on a CPU without it dies of SIGILL later, not at restore. So
placement of a memory snapshot requires equal CPU flags, kernel release and CRIU
version (placement.MEMORY_KEYS) - stricter than needed, never unsafe.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = sorted(line.split(":", 1)[1].split())
                    return hashlib.sha256(" ".join(flags).encode()).hexdigest()[:16]
    except OSError:
        pass
    return "unknown"


def _criu() -> str:
    exe = shutil.which("criu") or "/usr/local/sbin/criu"
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "none"
    return out.split("\n")[0].removeprefix("Version:").strip() or "unknown"


def host_fingerprint() -> dict[str, str]:
    return {"kernel": os.uname().release, "cpu": _cpu_flags(), "criu": _criu()}
