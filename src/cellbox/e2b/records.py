"""The few things the E2B view keeps on a sandbox record that the service has no
method for: E2B metadata, the template name asked for, envVars, and a timeout moved
by ``set_timeout``. Written through the service's store (the same SQLite row), on the
record just read; kept here so the manager needs no E2B knowledge (issue 11 is
redesigning it: these two functions are the whole seam).
"""

from __future__ import annotations

import time
from typing import Any

from .manager_api import SandboxRecord, SandboxService, record, save

ENV_KEY = "e2b_env"


def set_extra(service: SandboxService, rec: SandboxRecord, values: dict[str, Any]) -> SandboxRecord:
    fresh = record(service, rec.id) or rec
    fresh.extra.update(values)
    save(service, fresh)
    return fresh


def set_timeout(service: SandboxService, rec: SandboxRecord, seconds: int) -> SandboxRecord:
    """E2B's timeout counts from *now*; ours from creation: move ours to now + seconds."""
    fresh = record(service, rec.id) or rec
    elapsed = max(0, int(time.time() * 1000) - fresh.created_at) // 1000
    fresh.timeout_secs = elapsed + max(1, seconds)
    save(service, fresh)
    return fresh
