"""Overload through the real server: a burst of cold creates beyond what the host may
start at once (``CELLBOX_COLD_SLOTS=1``, a queue of 1) is answered 200 for the ones
admitted and 503 ``OVERLOADED`` with ``Retry-After`` for the rest, at once, never a
500 or a timeout; a refused create leaves no record and no sandbox behind, and the
admitted ones are complete (their agent runs a command through the proxy)."""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from cellbox.manager.store import Store

from ..conftest import _missing_requirements
from ..keys import auth
from .conftest import SDK_CREATE_HEADERS, ServerProcess

BURST = 6


@pytest.fixture(scope="module")
def gated_server(settings) -> Iterator[ServerProcess]:
    if reason := _missing_requirements(settings):
        pytest.skip(reason)
    log_path = Path(tempfile.gettempdir()) / f"cellbox-gate-server-{os.getpid()}.log"
    log_path.unlink(missing_ok=True)
    srv = ServerProcess(log_path)
    srv.extra_env = {"CELLBOX_COLD_SLOTS": "1", "CELLBOX_COLD_QUEUE": "1"}
    srv.start()
    try:
        yield srv
    finally:
        code = srv.stop()
        log = srv.log_path.read_text(errors="replace")
        assert code == 0, f"server exit code {code}:\n{srv.log_tail()}"
        bad = [line for line in log.splitlines() if '" 500' in line or "unexpected error" in line]
        assert not bad, "the server answered 500 or hit an unexpected error:\n" + "\n".join(bad[:20])


def test_a_burst_past_the_gate_is_refused_with_503_and_leaves_nothing(gated_server, settings) -> None:
    ns = f"gate-{uuid.uuid4().hex[:8]}"
    base = f"{gated_server.url}/v1/namespaces/{ns}"
    made: list[str] = []
    with httpx.Client(timeout=120, headers={**auth(), **SDK_CREATE_HEADERS}) as http:
        def create(_: int) -> httpx.Response:
            return http.post(f"{base}/sandboxes", json={"resources": {"cpus": 1.0, "memory_mb": 1024}})

        try:
            with ThreadPoolExecutor(BURST) as pool:
                answers = list(pool.map(create, range(BURST)))
            made = [r.json()["sandbox_id"] for r in answers if r.status_code == 200]
            statuses = sorted(r.status_code for r in answers)
            assert set(statuses) <= {200, 503}, [(r.status_code, r.text[:200]) for r in answers]
            # one in flight + one queued are admitted; the others are refused at once
            assert 1 <= len(made) <= 2 + 1 and statuses.count(503) >= BURST - 3, statuses
            for r in answers:
                if r.status_code == 503:
                    body = r.json()
                    assert body["code"] == "OVERLOADED" and "retry" in body["error"]
                    assert int(r.headers["Retry-After"]) >= 1
                    assert "sandbox_id" not in body
                else:
                    assert r.json()["status"] == "running"
            # nothing half-made: the namespace holds exactly the admitted sandboxes
            store = Store(settings.db_path)
            try:
                live = {rec.id for rec in store.list(live_only=True) if rec.namespace == ns}
                every = {rec.id for rec in store.list() if rec.namespace == ns}
            finally:
                store.close()
            assert live == every == set(made)
            for sid in made:  # and each admitted one is whole: its agent runs a command
                run = http.post(f"http://127.0.0.1:{gated_server.proxy_port}/api/v1/processes/run",
                                json={"command": "true", "timeout": 30}, headers={"Host": f"{sid}.local"})
                exits = [json.loads(line[5:]) for line in run.text.splitlines() if line.startswith("data:")]
                assert run.status_code == 200 and {"exit_code": 0}.items() <= exits[-1].items(), run.text[-300:]
            # the gate frees its slots: one more create now goes through
            again = create(0)
            assert again.status_code == 200, again.text
            made.append(again.json()["sandbox_id"])
        finally:
            for sid in made:
                http.delete(f"{base}/sandboxes/{sid}")
