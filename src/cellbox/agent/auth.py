"""The agent proves to the host that it is the agent: HMAC-SHA256 over a host nonce.

Threat: the tenant is root in its sandbox and can kill the agent and serve its own
program on :9501; a neighbour that hijacks the sandbox's address could answer too. The
host must not take either for the agent. So every sandbox gets a random secret (32
bytes) that only the host and the agent know; the host sends a fresh random nonce with
each request (``NONCE_HEADER``) and the agent answers with ``PROOF_HEADER`` =
HMAC(secret, "cellbox-agent-v1" 0 nonce). An impostor that never saw the secret cannot
compute it for a nonce it has not seen before (128 random bits each time).

How the secret stays the agent's: it arrives in the agent's environment
(``SECRET_ENV``, from the bundle's ``config.json``, 0600 on the host), is removed from
``os.environ`` at start-up so no child inherits it, and the agent is non-dumpable
(``hardening.py``) so the tenant cannot read ``/proc/1/environ`` or ``/proc/1/mem``.
It is never in a file inside the sandbox and never in argv (``/proc/1/cmdline`` is
world-readable).

Rotation: a restored agent (resume, clone, restore from a snapshot) carries the secret
of the agent that was dumped, so the host rotates it right after restore with a call
authenticated by the old secret (``ROTATE_HEADER`` = HMAC(old, "rotate" 0 nonce)); both
sides derive the new one as HMAC(old, "derive" 0 nonce), so it never crosses the wire,
and two clones of one snapshot get different secrets (different nonces).

Tenant processes may still call their own agent without a nonce (they own the
sandbox); a request with a nonce gets a proof, which is useless to them: a later host
request carries a new nonce. HMAC is written out over ``_sha256`` because ``hmac``
imports ``hashlib`` and OpenSSL (~20-30 ms of agent start-up); shared with the host so
both sides compute it the same way.
"""

from __future__ import annotations

import os

SECRET_ENV = "CELLBOX_AGENT_SECRET"
NONCE_HEADER = "x-cellbox-nonce"
PROOF_HEADER = "x-cellbox-auth"
ROTATE_HEADER = "x-cellbox-rotate"
ROTATE_PATH = "/_cellbox/v1/rotate"
MAX_NONCE = 128  # hex characters accepted as a nonce (the host sends 32)
_PROOF = b"cellbox-agent-v1\0"
_ROTATE = b"rotate\0"
_DERIVE = b"derive\0"

try:
    from _sha256 import sha256 as _sha256
except ImportError:  # an interpreter built without it
    from hashlib import sha256 as _sha256  # type: ignore[assignment]

_BLOCK = 64
_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


def hmac_sha256(key: bytes, msg: bytes) -> bytes:
    """RFC 2104 HMAC-SHA256 (checked against ``hmac`` in the unit tests)."""
    if len(key) > _BLOCK:
        key = _sha256(key).digest()
    key = key.ljust(_BLOCK, b"\0")
    inner = _sha256(key.translate(_IPAD) + msg).digest()
    return _sha256(key.translate(_OPAD) + inner).digest()


def valid_nonce(nonce: str) -> bool:
    return 16 <= len(nonce) <= MAX_NONCE and all(c in "0123456789abcdef" for c in nonce)


def proof(secret: bytes, nonce: str) -> str:
    return hmac_sha256(secret, _PROOF + nonce.encode("ascii")).hex()


def rotate_tag(secret: bytes, nonce: str) -> str:
    return hmac_sha256(secret, _ROTATE + nonce.encode("ascii")).hex()


def derive(secret: bytes, nonce: str) -> bytes:
    return hmac_sha256(secret, _DERIVE + nonce.encode("ascii"))


def equal(a: str, b: str) -> bool:
    """Constant-time comparison of two hex strings (no early exit on a mismatch)."""
    if len(a) != len(b):
        return False
    diff = 0
    for x, y in zip(a.encode("latin-1", "replace"), b.encode("latin-1", "replace")):
        diff |= x ^ y
    return diff == 0


class AgentSecret:
    """The agent's side: holds the secret, answers nonces, accepts a rotation."""

    def __init__(self, secret: bytes | None) -> None:
        self.secret = secret

    @classmethod
    def from_environ(cls) -> "AgentSecret":
        """Take the secret out of the environment, so no child can inherit it."""
        raw = os.environ.pop(SECRET_ENV, "")
        try:
            return cls(bytes.fromhex(raw) if raw else None)
        except ValueError:
            return cls(None)

    def header_for(self, nonce: str | None) -> tuple[str, str] | None:
        """The proof header for a request's nonce, if there is a secret and a nonce."""
        if self.secret is None or nonce is None or not valid_nonce(nonce):
            return None
        return (PROOF_HEADER, proof(self.secret, nonce))

    def rotate(self, nonce: str | None, tag: str | None) -> bool:
        """Switch to the secret derived for ``nonce`` if ``tag`` proves the caller knows ours."""
        if self.secret is None or nonce is None or tag is None or not valid_nonce(nonce):
            return False
        if not equal(tag, rotate_tag(self.secret, nonce)):
            return False
        self.secret = derive(self.secret, nonce)
        return True
