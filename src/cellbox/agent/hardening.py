"""Keep the tenant's root out of the agent's memory and file descriptors.

The tenant is root in its sandbox but has no ``CAP_SYS_PTRACE``. A PID 1 it could
ptrace would be open to it: ``PTRACE_ATTACH``, ``/proc/1/mem`` and ``/proc/1/environ``
(the agent's secret, see ``auth.py``), and ``pidfd_getfd`` (its listening socket).
The kernel lets a process without ``CAP_SYS_PTRACE`` at another only if the target's
permitted capabilities are a subset of its own, and (for a non-dumpable target) not
at all. Two locks, so each holds where the other cannot:

* **A capability only the agent holds.** The bundle gives the container's init
  ``CAP_WAKE_ALARM`` on top of the tenant's set (harmless: it lets a timer wake a
  suspended machine); the agent drops it from its *bounding* set at start, which keeps
  it in its own permitted set but takes it from every program it executes (root's
  permitted set after ``execve`` is bounded by that set). Every tenant process then
  lacks a capability the agent has, so none can ptrace it or open its ``/proc`` files,
  in a user namespace too (there, uid 0 inside is uid 0 of every tenant process, and
  dumpability is the only other lock).
* **Non-dumpable**, only without a user namespace: with one, CRIU's dump cannot open
  a non-dumpable task's ``/proc/<pid>/ns`` files ("Permission denied", measured), so a
  non-dumpable agent made every suspend, snapshot and clone fail.

``execve`` resets dumpability, so the processes the agent starts stay debuggable by
the tenant. ctypes is imported here only (a few ms, once): the standard library has no
prctl.
"""

from __future__ import annotations

PR_SET_DUMPABLE = 4
PR_GET_DUMPABLE = 3
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
CAP_WAKE_ALARM = 35  # the agent's own capability (runtime/bundle.py AGENT_ONLY_CAPABILITY)


def _in_user_namespace() -> bool:
    try:
        with open("/proc/self/uid_map") as f:
            return f.read().split() != ["0", "0", "4294967295"]
    except OSError:
        return False


def protect() -> bool:
    """Apply both locks that apply here; True if the tenant cannot ptrace the agent."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_CAPBSET_READ, CAP_WAKE_ALARM, 0, 0, 0) == 1:
        libc.prctl(PR_CAPBSET_DROP, CAP_WAKE_ALARM, 0, 0, 0)
    marked = libc.prctl(PR_CAPBSET_READ, CAP_WAKE_ALARM, 0, 0, 0) == 0 and _holds_wake_alarm()
    if _in_user_namespace():
        return marked
    libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    return bool(libc.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) == 0) or marked


def _holds_wake_alarm() -> bool:
    """CAP_WAKE_ALARM in this process's permitted set (/proc/self/status CapPrm)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapPrm:"):
                    return bool(int(line.split()[1], 16) >> CAP_WAKE_ALARM & 1)
    except OSError:
        pass
    return False


