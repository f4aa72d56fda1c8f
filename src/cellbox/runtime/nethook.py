"""The OCI prestart hook that wires a sandbox's network (source: ``nethook.c``).

Built on the host with the system C compiler the first time a manager starts (setup
installs build-essential for CRIU), into ``<data_dir>/bin/nethook-<hash of the
source>``: content-addressed like the agentfs tree, so a changed hook is a new file
and a running or suspended sandbox's bundle keeps naming one that exists.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import InternalFailure
from . import userns

SOURCE = Path(__file__).with_name("nethook.c")
HOOK_TIMEOUT = 10  # seconds; runc kills a hook that takes longer and fails the start


def ensure(bin_dir: Path) -> Path:
    """The compiled hook for the current source, built if missing."""
    src = SOURCE.read_bytes()
    exe = bin_dir / f"nethook-{hashlib.sha256(src).hexdigest()[:12]}"
    if exe.exists():
        return exe
    bin_dir.mkdir(parents=True, exist_ok=True)
    tmp = bin_dir / f".{exe.name}.{os.getpid()}"
    res = subprocess.run(["cc", "-O2", "-Wall", "-o", str(tmp), str(SOURCE)], capture_output=True, text=True,
                         check=False)
    if res.returncode != 0:
        raise InternalFailure(f"could not build the network hook: {res.stderr.strip()[-500:]}")
    os.replace(tmp, exe)  # atomic: a concurrent builder produced the same bytes
    return exe


def hooks(exe: Path, wiring: Sequence[str], base: int) -> dict[str, Any]:
    """``hooks`` of a bundle: wire a sandbox's netns as ``wiring`` says.

    ``wiring`` is ``network/node.py``'s ``PortWiring.hook_args()`` (netns name, veth,
    MAC, address/prefix, gateway, bridge, the port's link batch, the host's neighbour
    line): made by the network side and passed in, so the runtime imports nothing of
    ``network/``. ``base`` is the sandbox's first host id: ``ping_group_range``,
    written from the host, is in host gids.
    """
    *head, neigh = wiring
    args = [exe.name, *head, f"{base} {base + userns.SIZE - 1}", neigh]
    return {"prestart": [{"path": str(exe), "args": args, "timeout": HOOK_TIMEOUT,
                        "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]}]}
