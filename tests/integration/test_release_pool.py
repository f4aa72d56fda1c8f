"""``cellbox setup --release`` (``make test`` runs it after the suite): the pool is
unmounted only when no sandbox's root filesystem is in it. On a tmpfs of the test's own
at a data dir of its own, never the host's pool."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from cellbox.config import Settings
from cellbox.errors import InternalFailure
from cellbox.storage.pool import release_pool

pytestmark = pytest.mark.root


def test_release_refuses_while_a_sandbox_is_in_the_pool(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert release_pool(settings).endswith("is not mounted")
    settings.pool.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "cbtest-pool", str(settings.pool)], check=True)
    try:
        (settings.pool / "sandboxes" / "abc").mkdir(parents=True)
        with pytest.raises(InternalFailure, match="1 sandbox"):
            release_pool(settings)
        assert os.path.ismount(settings.pool)
        (settings.pool / "sandboxes" / "abc").rmdir()
        assert release_pool(settings).endswith("unmounted")
        assert not os.path.ismount(settings.pool)
    finally:
        if os.path.ismount(settings.pool):
            subprocess.run(["umount", str(settings.pool)], check=True)
