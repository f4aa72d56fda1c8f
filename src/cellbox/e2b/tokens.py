"""envd access tokens: ``X-Access-Token`` proves the caller got the sandbox from the API.

A token is HMAC-SHA256(host key, sandbox ID): derived, never stored, so it survives
pause/resume (the agent's own secret rotates on every restore, this must not) and a
sandbox made through the Tensorlake API has one too when an E2B client connects to
it. The REST API hands it only to keys that may see the sandbox (same project rules as
everything else); the envd view refuses a request without the right one (401).
The host key is ``<data dir>/e2b.key`` (0600, made on first use).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path


class TokenKey:
    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / "e2b.key"
        self._key: bytes | None = None

    def _load(self) -> bytes:
        if self._key is None:
            try:
                self._key = bytes.fromhex(self.path.read_text().strip())
            except FileNotFoundError:
                key = secrets.token_bytes(32)
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(key.hex())
                self._key = key
            except (FileExistsError, ValueError):  # a racing first use, or a damaged file
                self._key = bytes.fromhex(self.path.read_text().strip())
        return self._key

    def token(self, sandbox_id: str) -> str:
        return hmac.new(self._load(), f"envd:{sandbox_id}".encode(), hashlib.sha256).hexdigest()

    def check(self, sandbox_id: str, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(self.token(sandbox_id).encode(), (token or "").encode())
