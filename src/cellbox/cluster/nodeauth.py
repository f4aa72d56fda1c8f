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
    got = _unexpired(authorization.decode("latin-1"), PREFIX, now)
    return got is not None and hmac.compare_digest(got[1], _mac(key, ref, port, got[0]))


def _unexpired(header: str, prefix: str, now: float | None) -> tuple[int, str] | None:
    """(expiry, mac) of a ``[Bearer ]<prefix><expiry>_<mac>`` token not yet expired."""
    text = header.strip()
    text = text[7:].strip() if text.lower().startswith("bearer ") else text
    if not text.startswith(prefix):
        return None
    expiry_s, _, mac = text[len(prefix):].partition("_")
    if not expiry_s.isdigit() or int(expiry_s) < (now or time.time()):
        return None
    return int(expiry_s), mac


# -- reads a replica makes of a node directly (node_reads.py) ------------------------------

READ_PREFIX = "cbx_nread_"


def _read_mac(key: bytes, node_id: str, local_id: str, project: str, expiry: int) -> str:
    return hmac.new(key, f"read\n{node_id}\n{local_id}\n{project}\n{expiry}".encode(), hashlib.sha256).hexdigest()


def read_token(key: bytes, node_id: str, local_id: str, project: str, now: float | None = None) -> str:
    """A replica's credential for reading one sandbox's logs on one node, for 60 s: it
    names the node, the sandbox's ID there and its project (a token for another of
    them opens nothing)."""
    expiry = int((now or time.time()) + TOKEN_TTL_S)
    return f"{READ_PREFIX}{expiry}_{_read_mac(key, node_id, local_id, project, expiry)}"


def verify_read(key: bytes, header: str | None, node_id: str, local_id: str, project: str,
                now: float | None = None) -> bool:
    got = _unexpired(header or "", READ_PREFIX, now)
    return got is not None and hmac.compare_digest(got[1], _read_mac(key, node_id, local_id, project, got[0]))
