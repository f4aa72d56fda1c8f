"""The hostile-tenant suite: each test is an attack made from inside a real sandbox
(or by a client of the real server), judged from the host's side.

Every test here must fail on the code before the fix it guards (the walls issue lists
the holes). Fixtures come from ``tests/conftest.py`` (``sandboxes``, ``manager``) and
the API/SDK conftests; this file adds only what the attacks share.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def box(manager: Any, loop_thread: Any) -> Iterator[tuple[Any, Any]]:
    """One default sandbox for a whole module of probes (each probe forks its own child)."""
    from ..conftest import Sandboxes

    sb = Sandboxes(manager, loop_thread)
    try:
        yield sb, sb.create()
    finally:
        sb.cleanup()


def run_python(sandboxes: Any, rec: Any, code: str, timeout: float = 60) -> dict[str, Any]:
    """Run ``code`` with the sandbox's python3 as the tenant's root; return the agent's result."""
    return sandboxes.run(rec, "python3", "-c", code, timeout=timeout)


def run_python_json(sandboxes: Any, rec: Any, code: str, timeout: float = 60) -> Any:
    """Run ``code`` (which prints one JSON document last) and parse what it printed."""
    res = run_python(sandboxes, rec, code, timeout=timeout)
    assert res["exit_code"] == 0, res
    return json.loads(res["out"].strip().splitlines()[-1])


# The live server of the API tests (``tests/api/conftest.py``), for attacks made as a
# client of the real server: the proxy's wire handling, the API's input handling.
from ..api.conftest import api, server  # noqa: E402,F401
