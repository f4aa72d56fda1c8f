"""Where the CLI and the SDK find an API key, in one order for both (issue 12):

1. the ``--api-key`` option / ``api_key=`` argument;
2. ``$CELLBOX_API_KEY``;
3. ``$TENSORLAKE_API_KEY`` (so one variable serves the tensorlake SDK and ours);
4. ``~/.config/cellbox/credentials`` (written by ``cellbox login``, mode 0600);
5. ``<data dir>/admin.key`` (``$CELLBOX_DATA_DIR``, default ``/var/lib/cellbox``) when
   readable, i.e. for root on the server's host: the first minute needs no key at all.

No third-party imports: the SDK and ``cellbox setup`` both load this.
"""

from __future__ import annotations

import os
from pathlib import Path


def credentials_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "cellbox" / "credentials"


def admin_key_file() -> Path:
    return Path(os.environ.get("CELLBOX_DATA_DIR", "/var/lib/cellbox")) / "admin.key"


def _first_line(path: Path) -> str | None:
    try:
        for line in path.read_text().splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                return line.strip()
    except (OSError, UnicodeDecodeError):  # missing or not ours to read: try the next source
        return None
    return None


def find_api_key(explicit: str | None = None) -> str | None:
    """The first key found in the documented order, or None."""
    if explicit:
        return explicit
    for var in ("CELLBOX_API_KEY", "TENSORLAKE_API_KEY"):
        if value := os.environ.get(var, "").strip():
            return value
    return _first_line(credentials_path()) or _first_line(admin_key_file())


def save_credentials(key: str) -> Path:
    """Write the key for ``cellbox login``: a 0600 file, replaced atomically."""
    path = credentials_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".credentials.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, (key.strip() + "\n").encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return path
