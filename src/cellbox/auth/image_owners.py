"""Which project owns each image, and which images are public (issue 12, gap 1).

The image catalog itself (``manager/images.py``) keeps one namespace of names for the
whole server; ownership is a table beside it, kept by the door, so the manager needs
no change to become per project: the API asks ``visible``/``may_change`` before it
calls the manager, and records the owner after a build, pull or register.

An image with no row (the default image, images made before this table existed, and
images pulled on demand by a create) is public: everyone reads and boots it, only an
admin changes it. An image made with a member key is private to its project. An
admin's image is public unless it was made under another project's namespace path.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from ..auth.keys import Principal

SCHEMA = """
CREATE TABLE IF NOT EXISTS image_owners (
    name TEXT PRIMARY KEY,
    project TEXT NOT NULL,
    public INTEGER NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class Owner:
    project: str | None  # None: nobody's (public, admin-managed)
    public: bool


class ImageOwners:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        db.executescript(SCHEMA)

    def get(self, name: str) -> Owner:
        row = self.db.execute("SELECT project, public FROM image_owners WHERE name=?", (name,)).fetchone()
        return Owner(None, True) if row is None else Owner(row[0], bool(row[1]))

    def set(self, name: str, project: str, public: bool) -> None:
        self.db.execute("INSERT OR REPLACE INTO image_owners (name, project, public) VALUES (?,?,?)",
                        (name, project, int(public)))

    def drop(self, name: str) -> None:
        self.db.execute("DELETE FROM image_owners WHERE name=?", (name,))

    def visible(self, name: str, principal: Principal | None, project: str) -> bool:
        """Whether ``project`` (acting as ``principal``) may see, describe and boot it."""
        owner = self.get(name)
        return owner.public or owner.project == project or (principal is not None and principal.is_admin)

    def may_change(self, name: str, principal: Principal | None, project: str) -> bool:
        """Whether it may be replaced, deleted, pre-booted or given a warm pool."""
        if principal is None or principal.is_admin:
            return True
        owner = self.get(name)
        return owner.project == project
