"""``cellbox key``, ``secret``, ``quota``, ``audit``, ``login`` and ``whoami`` against the
real server; the key lookup order of the CLI (``--api-key`` beats the environment,
which beats the login file, which beats ``admin.key``)."""

from __future__ import annotations

import json
import os
import secrets
import stat
import subprocess
from pathlib import Path

from .conftest import CELLBOX, CLI


def _project() -> str:
    return f"cli-door-{secrets.token_hex(4)}"


def test_key_lifecycle_and_lookup_order(cli: CLI, tmp_path: Path):
    project = _project()
    key = cli("key", "create", "--project", project, "--expires", "1d").stdout.strip()
    assert key.startswith("cbx_")
    key_id = key.split("_")[1]
    # --api-key wins over the admin.key the CLI would otherwise find.
    who = json.loads(cli("whoami", "--api-key", key).stdout)
    assert who["projectId"] == project and who["role"] == "member"
    assert json.loads(cli("whoami").stdout)["role"] == "admin"
    # cellbox login stores it 0600; it is used before admin.key, after the environment.
    env = {**cli.server.env(), "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    env.pop("CELLBOX_API_KEY", None)
    env.pop("TENSORLAKE_API_KEY", None)

    def run(*args: str, input: str | None = None, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(CELLBOX), *args], env={**env, **(extra or {})}, capture_output=True, text=True,
                              timeout=60, input=input)

    assert run("login", input=key + "\n").returncode == 0
    creds = tmp_path / "cfg" / "cellbox" / "credentials"
    assert stat.S_IMODE(os.stat(creds).st_mode) == 0o600 and creds.read_text().strip() == key
    assert json.loads(run("whoami").stdout)["projectId"] == project
    admin = cli("key", "create", "--project", project, "--role", "admin").stdout.strip()
    # The environment beats the login file.
    assert json.loads(run("whoami", extra={"TENSORLAKE_API_KEY": admin}).stdout)["role"] == "admin"
    listed = json.loads(cli("key", "ls", "--project", project, "--json").stdout)
    assert {k["id"] for k in listed} >= {key_id} and all("hash" not in k for k in listed)
    # A member key cannot list keys; after revoke it cannot do anything.
    assert "admin" in run("key", "ls").stderr
    cli("key", "revoke", key_id)
    refused = run("ls")
    assert refused.returncode == 1 and "revoked" in refused.stderr
    cli("key", "revoke", admin.split("_")[1])


def test_secrets_and_quota_verbs(cli: CLI):
    project = _project()
    key = cli("key", "create", "--project", project).stdout.strip()
    cli("secret", "set", "API_TOKEN", "--api-key", key, input="tok-123\n")
    listed = cli("secret", "ls", "--api-key", key, "--json").stdout
    assert json.loads(listed)[0]["name"] == "API_TOKEN" and "tok-123" not in listed
    sid = cli.tracker.add(cli("new", "-m", "256", "--secret", "API_TOKEN", "--api-key", key).stdout.strip(), project)
    out = cli("exec", "--api-key", key, sid, "sh", "-c", "echo got=$API_TOKEN").stdout
    assert "got=tok-123" in out
    cli("secret", "rm", "API_TOKEN", "--api-key", key)
    assert json.loads(cli("secret", "ls", "--api-key", key, "--json").stdout) == []
    set_ = json.loads(cli("quota", "set", project, "running_sandboxes=5", "vcpus=2.5").stdout)
    assert set_["limits"] == {"running_sandboxes": 5, "vcpus": 2.5}
    got = json.loads(cli("quota", "get", project, "--api-key", key).stdout)
    assert got["usage"]["running_sandboxes"] == 1
    assert cli("quota", "set", project, "bogus=1", check=False).returncode == 2
    audit = json.loads(cli("audit", "--project", project, "--json").stdout)
    assert any(e["action"] == "POST /sandboxes" and e["status"] == 200 for e in audit)
