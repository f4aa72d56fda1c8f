"""The control plane's credential toward a node's proxy, and the cluster key.

The control plane has already checked the client's API key and project; the node's
proxy must only learn that the request comes from the control plane and for which
sandbox and port. A token ``cbx_node_<expiry>_<hmac>`` (HMAC-SHA256 with the cluster
key over ``ref, port, expiry``) says exactly that, for 60 seconds: a captured token
opens nothing else and not for long. It is shaped like a cellbox key (``cbx_``) so
the node's proxy strips it like one before the request reaches the sandbox.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path

TOKEN_TTL_S = 60
PREFIX = "cbx_node_"


def load_key(path: Path) -> bytes:
    """The cluster key (32 random bytes, hex in a 0600 file), made on first use.

    Every node and control-plane replica must hold the same file: it authenticates
    both the data path and the snapshot artifacts (artifacts.py).
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    key = bytes.fromhex(path.read_text().strip())
    if len(key) < 32:
        raise ValueError(f"{path}: a cluster key is at least 32 bytes of hex")
    return key


def _mac(key: bytes, ref: str, port: int, expiry: int) -> str:
    return hmac.new(key, f"{ref}\n{port}\n{expiry}".encode(), hashlib.sha256).hexdigest()


def token(key: bytes, ref: str, port: int, now: float | None = None) -> str:
    expiry = int((now or time.time()) + TOKEN_TTL_S)
    return f"{PREFIX}{expiry}_{_mac(key, ref, port, expiry)}"


def verify(key: bytes, authorization: bytes | None, ref: str, port: int, now: float | None = None) -> bool:
    """Whether ``Authorization: Bearer <token>`` is the control plane's, for this ref and port."""
    if not authorization:
        return False
    text = authorization.decode("latin-1").strip()
    text = text[7:].strip() if text.lower().startswith("bearer ") else text
    if not text.startswith(PREFIX):
        return False
    expiry_s, _, mac = text[len(PREFIX):].partition("_")
    if not expiry_s.isdigit() or int(expiry_s) < (now or time.time()):
        return False
    return hmac.compare_digest(mac, _mac(key, ref, port, int(expiry_s)))
