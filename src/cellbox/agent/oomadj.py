"""Processes the agent starts are the OOM killer's first choice, not the agent.

Losing the agent (PID 1) ends the sandbox, so under memory pressure the kernel should
kill the tenant's processes first. The usual way, a negative ``oom_score_adj`` for
PID 1, needs ``CAP_SYS_RESOURCE`` to set, which the sandbox does not have and which
even host root lacks on this project's machines (runc's ``process.oomScoreAdj`` of
-998 fails with "failed to update /proc/self/oom_score_adj: Permission denied"). So
the other way round: every child is raised to ``CHILD_SCORE`` right after it starts
(raising needs no privilege; the value is inherited by its own children). The
kernel's badness is RSS plus ``adj/1000`` of the limit, so with 500 a tenant process
is chosen before an agent that is less than half the limit larger than it -- and the
agent keeps its retained output within 1/8 of the limit (``budget.py``). A tenant can
lower its own processes back to 0 (only below the inherited minimum needs the
capability): that risks only its own sandbox.
"""

from __future__ import annotations

CHILD_SCORE = b"500"


def demote(pid: int) -> None:
    """Set ``pid``'s oom_score_adj to ``CHILD_SCORE``; a child that already exited is fine."""
    try:
        with open(f"/proc/{pid}/oom_score_adj", "wb", buffering=0) as f:
            f.write(CHILD_SCORE)
    except OSError:
        pass
