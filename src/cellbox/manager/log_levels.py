"""Tensorlake's log levels (spec §2.9: trace=1 debug=2 info=3 warn=4 error=5 fatal=6)
for the lines cellbox keeps, which carry no severity of their own.

The rule, in order: a level word at the start of the line (``ERROR …``, ``[warn]``,
``WARNING:root:…`` as Python's logging prints it, ``<debug>``) or a ``level=``/
``"level":`` field near its start (logfmt, JSON loggers, runc's own log) names it;
otherwise stderr is ``error`` and stdout ``info``, as Cloud Logging and most log
drivers read streams. Only the first ``HEAD`` characters are looked at: a
tenant's megabyte line costs the same as a short one.
"""

from __future__ import annotations

import re

TRACE, DEBUG, INFO, WARN, ERROR, FATAL = 1, 2, 3, 4, 5, 6
NAMES = {"trace": TRACE, "debug": DEBUG, "info": INFO, "warn": WARN, "error": ERROR, "fatal": FATAL}
HEAD = 96

_WORDS = {"trace": TRACE, "debug": DEBUG, "dbg": DEBUG, "info": INFO, "notice": INFO, "warn": WARN,
          "warning": WARN, "err": ERROR, "error": ERROR, "crit": FATAL, "critical": FATAL, "fatal": FATAL,
          "panic": FATAL, "emerg": FATAL, "alert": FATAL}
_ALT = "|".join(sorted(_WORDS, key=len, reverse=True))
_PREFIX = re.compile(rf"^[\s\[<(]{{0,3}}({_ALT})(?![a-z0-9])", re.IGNORECASE)
_FIELD = re.compile(rf"\b(?:level|severity|lvl)\"?\s*[=:]\s*\"?({_ALT})(?![a-z0-9])", re.IGNORECASE)


def level_of(line: str, stream: str | None) -> int:
    """The level of one output line (``stream``: stdout, stderr, or None for the runtime's)."""
    head = line[:HEAD]
    match = _PREFIX.match(head) or _FIELD.search(head)
    if match:
        return _WORDS[match.group(1).lower()]
    return ERROR if stream == "stderr" else INFO
