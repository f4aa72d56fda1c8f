"""The agent's authentication primitives and its output budget, without a sandbox."""

from __future__ import annotations

import hashlib
import hmac
import os

from cellbox.agent import auth
from cellbox.agent.budget import OutputBudget, line_cost, read_memory_limit, total_for
from cellbox.agent.output import OutputLog


def test_hmac_matches_the_standard_library() -> None:
    for size in (0, 1, 32, 64, 65, 200):
        key, msg = os.urandom(size), os.urandom(77)
        assert auth.hmac_sha256(key, msg) == hmac.new(key, msg, hashlib.sha256).digest()


def test_proof_rotation_and_bad_input() -> None:
    secret = auth.AgentSecret(os.urandom(32))
    old = secret.secret
    assert old is not None
    nonce = os.urandom(16).hex()
    assert secret.header_for(nonce) == (auth.PROOF_HEADER, auth.proof(old, nonce))
    assert secret.header_for(None) is None
    assert secret.header_for("not hex!" * 4) is None
    assert secret.header_for("ab") is None  # too short to be a nonce
    assert not secret.rotate(nonce, "00" * 32)  # a caller that does not know the secret
    assert secret.secret == old
    assert secret.rotate(nonce, auth.rotate_tag(old, nonce))
    assert secret.secret == auth.derive(old, nonce) != old
    assert auth.AgentSecret(None).header_for(nonce) is None


def test_secret_leaves_the_environment(monkeypatch) -> None:
    monkeypatch.setenv(auth.SECRET_ENV, "ab" * 32)
    secret = auth.AgentSecret.from_environ()
    assert secret.secret == bytes.fromhex("ab" * 32)
    assert auth.SECRET_ENV not in os.environ


def test_budget_from_the_memory_limit(tmp_path) -> None:
    limit = tmp_path / "memory.limit_in_bytes"
    limit.write_text(str(256 << 20))
    assert read_memory_limit((str(limit),)) == 256 << 20
    assert total_for(256 << 20, 256 << 20) == 32 << 20
    (tmp_path / "max").write_text("max\n")
    assert read_memory_limit((str(tmp_path / "max"),)) is None
    assert read_memory_limit((str(tmp_path / "missing"),)) is None


def test_budget_trims_the_largest_log_first(tmp_path) -> None:
    limit = tmp_path / "limit"
    limit.write_text(str(8 << 20))  # budget: 1 MiB
    budget = OutputBudget(256 << 20, (str(limit),))
    assert budget.total == 1 << 20
    quiet, chatty = OutputLog(10_000, 16 << 20, budget), OutputLog(100_000, 16 << 20, budget)
    for i in range(10):
        quiet.append("stdout", f"quiet {i}", 0)
    wide = "\U0001F600" * 1000  # 4 bytes a character in a str
    assert line_cost(wide) > 4000
    for _ in range(2000):
        chatty.append("stdout", wide, 0)
    assert quiet.dropped == 0 and len(quiet) == 10
    assert chatty.truncated and chatty.dropped > 1000
    assert quiet.bytes + chatty.bytes <= budget.total
