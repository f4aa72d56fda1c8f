"""Keep the tenant's root out of the agent's memory and file descriptors.

The tenant is root in its sandbox but has no ``CAP_SYS_PTRACE``. A dumpable PID 1 is
still open to it: ``PTRACE_ATTACH``, ``/proc/1/mem`` and ``/proc/1/environ`` (the
agent's secret, see ``auth.py``), and ``pidfd_getfd`` (its listening socket). The kernel
lets only ``CAP_SYS_PTRACE`` holders at a non-dumpable process, so the agent clears its
dumpable flag before it serves anything. CRIU runs as host root (it has the
capability) and still dumps it. ``execve`` sets the flag back to 1, so the processes
the agent starts stay debuggable by the tenant.

ctypes is imported here only (a few ms, once): the standard library has no prctl.
"""

from __future__ import annotations

PR_SET_DUMPABLE = 4
PR_GET_DUMPABLE = 3


def make_undumpable() -> bool:
    """prctl(PR_SET_DUMPABLE, 0); True if the flag is now clear."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    return bool(libc.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) == 0)
