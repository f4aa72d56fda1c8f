"""The filesystem questions envd answers that the agent's file API does not (stat,
mkdir, move, a listing with owners and modes, a watcher's snapshot), asked by running
this script in the sandbox with the agent's own Python (``/.cellbox``, standard
library only), through the agent's process API.

Why a script and not new agent routes: the agent is copied into every sandbox and
stays as small as Tensorlake's daemon API needs; the E2B view is the host's, and a
process run is what the agent already does safely (as the sandbox's user, confined
like any tenant process). The script prints one JSON line: ``{"ok": …}`` or
``{"error": CODE, "message": …}``.
"""

from __future__ import annotations

import json
from collections import deque
from typing import Any

from ..runtime.agentfs import MOUNT_POINT, loader_name
from .link import Agent

TIMEOUT = 30.0
MAX_SNAPSHOT = 20_000  # entries a watcher's snapshot may hold

SCRIPT = r'''
import grp, json, os, pwd, shutil, stat, sys

def entry(p):
    st = os.lstat(p)
    link = stat.S_ISLNK(st.st_mode)
    target = os.readlink(p) if link else None
    try:
        st2 = os.stat(p) if link else st
    except OSError:
        st2 = st
    kind = "dir" if stat.S_ISDIR(st2.st_mode) else "file"
    try: owner = pwd.getpwuid(st.st_uid).pw_name
    except KeyError: owner = str(st.st_uid)
    try: group = grp.getgrgid(st.st_gid).gr_name
    except KeyError: group = str(st.st_gid)
    return {"name": os.path.basename(p.rstrip("/")) or "/", "type": kind, "path": p, "size": st2.st_size,
            "mode": stat.S_IMODE(st2.st_mode), "permissions": stat.filemode(st.st_mode), "owner": owner,
            "group": group, "mtime_ns": st2.st_mtime_ns, "symlink": target}

def walk(root, depth):
    out = []
    for name in sorted(os.listdir(root)):
        p = os.path.join(root, name)
        e = entry(p)
        out.append(e)
        if depth > 1 and e["type"] == "dir" and not e["symlink"]:
            out.extend(walk(p, depth - 1))
    return out

def snap(root, recursive, limit):
    seen = {}
    for e in walk(root, 64 if recursive else 1):
        seen[os.path.relpath(e["path"], root)] = [e["mtime_ns"], e["size"], e["type"]]
        if len(seen) > limit:
            break
    return seen

def main(op, *a):
    if op == "stat": return entry(a[0])
    if op == "list":
        os.stat(a[0])  # ENOENT before ENOTDIR
        if not os.path.isdir(a[0]): raise NotADirectoryError(20, "not a directory", a[0])
        return walk(a[0], int(a[1]))
    if op == "mkdir":
        if os.path.isdir(a[0]): return None
        os.makedirs(a[0]); return entry(a[0])
    if op == "move":
        if os.path.lexists(a[1]) and os.path.isdir(a[1]) != os.path.isdir(a[0]):
            raise FileExistsError(17, "destination exists", a[1])
        os.makedirs(os.path.dirname(a[1]) or "/", exist_ok=True)
        os.rename(a[0], a[1]); return entry(a[1])
    if op == "remove":
        if os.path.isdir(a[0]) and not os.path.islink(a[0]): shutil.rmtree(a[0])
        else: os.remove(a[0])
        return None
    if op == "snap":
        os.stat(a[0])
        if not os.path.isdir(a[0]): raise NotADirectoryError(20, "not a directory", a[0])
        return snap(a[0], a[1] == "1", int(a[2]))
    raise ValueError(op)

CODES = {2: "NOT_FOUND", 13: "PERMISSION_DENIED", 17: "ALREADY_EXISTS", 20: "NOT_A_DIRECTORY",
         21: "IS_DIRECTORY", 36: "NAME_TOO_LONG", 39: "NOT_EMPTY", 18: "CROSS_DEVICE", 28: "NO_SPACE"}
try:
    print(json.dumps({"ok": main(*sys.argv[1:])}))
except OSError as e:
    print(json.dumps({"error": CODES.get(e.errno, "OS_ERROR"), "message": f"{e.strerror}: {e.filename}"}))
'''


class HelperError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def argv(op: str, *args: str) -> dict[str, Any]:
    """The agent's run request for one operation (paths are arguments, never code)."""
    return {
        "command": f"{MOUNT_POINT}/lib64/{loader_name()}",
        "args": ["--library-path", f"{MOUNT_POINT}/lib64", f"{MOUNT_POINT}/bin/python3", "-S", "-E", "-B",
                 "-c", SCRIPT, op, *args],
        "timeout": TIMEOUT,
    }


async def run(agent: Agent, op: str, *args: str) -> Any:
    """The ``ok`` value of one operation; ``HelperError`` with the errno's code otherwise."""
    # Only the last answer line counts: keep a few lines, not all a tampered helper prints.
    out: deque[str] = deque(maxlen=4)
    errors: deque[str] = deque(maxlen=3)
    async for ev in agent.events("POST", "/api/v1/processes/run", argv(op, *args)):
        line = ev.get("line")
        if isinstance(line, str):
            (errors if ev.get("stream") == "stderr" else out).append(line)
    for line in reversed(out):
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict) and "error" in doc:
            raise HelperError(str(doc["error"]), str(doc.get("message", "")))
        if isinstance(doc, dict) and "ok" in doc:
            return doc["ok"]
    raise HelperError("INTERNAL", "filesystem helper failed: " + " / ".join(errors)[:500])
