"""Named fault points, for crash and failure tests only.

``CELLBOX_FAULT_POINT=<point>[:<action>]`` arms one point in this process; the code
calls ``faults.hit("<point>")`` at each step of a lifecycle operation. When the armed
point is reached:

* action ``kill`` (the default): ``SIGKILL`` to this process, mid-operation, as a
  power cut or an OOM kill of the server would (no ``finally`` runs, nothing flushed);
* action ``enospc``: ``OSError(ENOSPC)``, as a full pool would raise;
* action ``fail``: ``InternalFailure`` (a host tool failing, e.g. CRIU mid-dump).

Why an environment variable read once at import: zero cost when unset (``hit`` is one
comparison with ``None``), impossible to arm from a request, and a test arms it by
starting the server with it (``tests/security/test_faults.py``). Never set it in
production.
"""

from __future__ import annotations

import errno
import logging
import os
import signal

from .errors import InternalFailure

log = logging.getLogger(__name__)

ENV = "CELLBOX_FAULT_POINT"
ACTIONS = ("kill", "enospc", "fail")


def _parse(value: str | None) -> tuple[str, str] | None:
    if not value:
        return None
    point, _, action = value.partition(":")
    action = action or "kill"
    if action not in ACTIONS:
        raise ValueError(f"{ENV}: unknown action {action!r}; one of {', '.join(ACTIONS)}")
    return point, action


_ARMED = _parse(os.environ.get(ENV))


def hit(point: str) -> None:
    """Reached ``point``: do the armed action if it is this point, else nothing."""
    if _ARMED is None or _ARMED[0] != point:
        return
    action = _ARMED[1]
    log.warning("fault point %s reached: %s", point, action)
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "enospc":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), point)
    else:
        raise InternalFailure(f"injected failure at {point}")
