"""Property-based requests from the server's own OpenAPI document: never a 5xx.

Schemathesis generates valid (positive) and invalid (negative) requests for every
operation. Bounded: a few examples per operation and mode, the generate phase only;
creates get fewer examples, and every sandbox one of them makes is deleted.
"""

from __future__ import annotations

import time

import pytest
import schemathesis
from hypothesis.errors import Unsatisfiable
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.generation import GenerationMode

from ..keys import auth
from .conftest import Api

pytestmark = pytest.mark.root

EXAMPLES = 8
CREATE_EXAMPLES = 4
# Image jobs answer with a stream of JSON lines, and a generated pull reference would send
# skopeo to whatever host it names (tests may only reach loopback), and prune would drop the
# build cache under a concurrent image test: tests/images covers them.
SKIPPED = ("/images/build", "/images/pull", "/images/prune")
# Key and quota writes would revoke the suite's own key or cap the default project for
# the tests after this one: tests/api/test_door.py covers them.
SKIPPED_WRITES = ("/keys", "/quotas/")


def test_generated_requests_never_get_5xx(api: Api):
    started = time.monotonic()
    schema = schemathesis.openapi.from_url(api.server.url + "/openapi.json", headers=auth())
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 71  # 30 routes x (namespaced, flat) + 11 flat only (keys, quotas, audit, platform)
    operations = [op for op in operations if not op.path.endswith(SKIPPED)]
    operations = [op for op in operations
                  if op.method.upper() == "GET" or not op.path.startswith(SKIPPED_WRITES)]
    failures: list[str] = []

    for op in operations:
        creates = op.method.upper() == "POST"
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=op.as_strategy(generation_mode=mode))
            @settings(
                max_examples=CREATE_EXAMPLES if creates else EXAMPLES, deadline=None, database=None,
                phases=[Phase.generate], suppress_health_check=list(HealthCheck),
            )
            def check(case) -> None:
                resp = case.call(base_url=api.server.url, timeout=120, headers=auth())
                if creates and resp.status_code < 300:  # noqa: B023 - check() runs inside the loop
                    sid = resp.json().get("sandbox_id")
                    if sid:
                        api.made.append(f"{api.server.url}/sandboxes/{sid}")
                        for ns in ("default", (case.path_parameters or {}).get("namespace")):
                            if ns:
                                api.made.append(f"{api.server.url}/v1/namespaces/{ns}/sandboxes/{sid}")
                if resp.status_code >= 500:
                    failures.append(f"{case.method} {case.formatted_path} -> {resp.status_code}: {resp.text[:300]}")
                else:
                    body = resp.json()
                    if resp.status_code >= 400:
                        assert set(body) == {"error", "code"}, (case.method, case.formatted_path, body)

            t0 = time.monotonic()
            try:
                check()
            except Unsatisfiable:
                # An operation with no parameters (GET /snapshots) has no invalid input.
                assert mode == GenerationMode.NEGATIVE, (op.method, op.path)
            print(f"{op.method} {op.path} {mode.value}: {time.monotonic() - t0:.2f}s")  # shown on failure

    assert not failures, "\n".join(failures)
    assert time.monotonic() - started < 120
