"""``cellbox image create`` / ``image import``: Tensorlake's and Docker's names for
``build`` / ``pull`` (issue 14 item 9); before, both were "No such command"."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from .conftest import CLI


def test_image_create_is_build(cli: CLI, tmp_path: Path):
    (tmp_path / "Dockerfile").write_text("FROM cellbox/debian\nENV ALIAS_TEST=1\n")
    name = f"alias-{secrets.token_hex(3)}"
    try:
        made = cli("image", "create", "-t", name, "-q", "--json", str(tmp_path), timeout=600)
        info = json.loads(made.stdout)
        assert info["name"].split(":")[0].endswith(name) and info["kind"] == "oci"
        assert name in cli("image", "ls", "--json").stdout
    finally:
        cli("image", "rm", name, check=False)


def test_image_import_is_pull(cli: CLI):
    imported = cli("image", "import", "not a reference", check=False)
    pulled = cli("image", "pull", "not a reference", check=False)
    assert imported.returncode == pulled.returncode != 0
    assert imported.stderr == pulled.stderr and "reference" in imported.stderr.lower() + imported.stdout.lower(), \
        imported.stderr
    assert "build" in cli("image", "create", "--help").stdout.lower()
