"""``AsyncSandbox.get_or_create``: the sandbox of a name, made if there is none
(Tensorlake's ``Sandbox.get_or_create``; issue 14 item 9).

Kept out of ``sandbox.py`` (over the size limit already); it takes the class as an
argument so it imports nothing of it (no import circle).
"""

from __future__ import annotations

from typing import Any

from .._errors import SandboxNotFoundError
from ...errors import Conflict

_GONE = ("terminated", "failed")
_ASLEEP = ("suspended", "suspending")


async def get_or_create(cls: Any, name: str, *, resume: bool = True, api_url: str | None = None,
                        api_key: str | None = None, **create: Any) -> Any:
    """Connect to the live sandbox called ``name`` (resuming it if suspended and
    ``resume``), or create one with that name and ``create``'s arguments. Two callers
    racing: one creates, the other's create is a 409 and it connects instead."""
    for _ in range(3):
        try:
            sbx = await cls.connect(name, api_url=api_url, api_key=api_key)
        except SandboxNotFoundError:
            sbx = None
        if sbx is not None and sbx.status not in _GONE:
            if resume and sbx.status in _ASLEEP:
                await sbx.resume()
            return sbx
        if sbx is not None:
            await sbx.close()
        try:
            return await cls.create(name=name, api_url=api_url, api_key=api_key, **create)
        except Conflict:
            continue  # made by someone else between our look and our create
    raise Conflict(f"sandbox name {name!r} keeps changing hands: try again")
