"""Secret values sealed with Fernet (AES-128-CBC + HMAC-SHA256, from ``cryptography``).

The key is a file in the data directory (mode 0600, made by ``cellbox setup`` or the
first server start), so a copy of the database alone (a backup, a leaked file) does not
reveal any secret. Whoever is root on the host can read both: that is not a defence
against the host's own administrator, and is not meant to be.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from ..errors import InternalFailure


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to a new 0600 file atomically (never world-readable, even briefly)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def ensure_key(path: Path) -> bool:
    """Make the vault key if there is none; True if made."""
    if path.exists():
        return False
    try:
        write_private(path, Fernet.generate_key())
    except FileExistsError:  # another process is making it right now
        return False
    return True


class Vault:
    def __init__(self, key_path: Path) -> None:
        ensure_key(key_path)
        self._fernet = Fernet(key_path.read_bytes().strip())

    def seal(self, value: str) -> bytes:
        return self._fernet.encrypt(value.encode())

    def open(self, sealed: bytes) -> str:
        try:
            return self._fernet.decrypt(sealed).decode()
        except InvalidToken:
            raise InternalFailure("a stored secret cannot be decrypted: the vault key changed") from None
