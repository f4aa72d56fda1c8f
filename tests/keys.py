"""The admin key the test servers accept, for tests that speak raw HTTP.

Tests run as root on the server's host, so the key is the one ``cellbox setup`` (or
the first server start) stored in ``<data dir>/admin.key``; it is made here if
neither ran yet. SDK clients find it on their own (``cellbox.credentials``).
"""

from __future__ import annotations

import functools

from cellbox.credentials import find_api_key


@functools.cache
def admin_key() -> str:
    key = find_api_key()
    if key is None:
        from cellbox.auth.bootstrap import ensure_admin_key
        from cellbox.config import load

        ensure_admin_key(load())
        key = find_api_key()
    assert key, "no API key: run cellbox setup"
    return key


def auth() -> dict[str, str]:
    """The ``Authorization`` header of the admin key."""
    return {"Authorization": f"Bearer {admin_key()}"}
