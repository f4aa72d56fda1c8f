"""Issue 14's parity items through the unmodified tensorlake 0.5.163 client.

Each of these calls was a 404 or a 400 ``NOT_SUPPORTED`` against cellbox before.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.root


def test_live_resize_through_update_and_wait(made, client):
    sbx = made.create(memory_mb=512, cpus=1)
    proc = sbx.start_process("sleep", ["600"])
    info = sbx.update(memory_mb=768, cpus=2)  # PATCH resources, then polls its generation
    assert info.resources.memory_mb == 768 and info.resources.cpus == 2
    assert info.resource_resize is not None and info.resource_resize.status == "succeeded"
    gen = info.resource_resize.generation
    again = client.wait_for_resource_resize(sbx.sandbox_id, gen, timeout=30)
    assert again.resources.memory_mb == 768
    assert sbx.get_process(proc.pid).status == "running"  # resized in place, not restarted
    # The server's refusal reaches the caller unchanged.
    with pytest.raises(Exception) as err:
        sbx.update(disk_mb=1)
    assert "disk" in str(err.value)
