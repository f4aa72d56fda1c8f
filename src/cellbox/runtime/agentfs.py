"""The read-only tree mounted at ``/.cellbox`` in every sandbox: Python + the agent.

The agent must run in any root filesystem, including ones without Python or with a
different libc (Alpine, distroless). So we carry our own: the host interpreter's
binary, its standard library, the shared libraries it links, and the agent package
with its two pure-Python dependencies (h11, wsproto). It is started through the
dynamic loader we carry (``/.cellbox/lib64/ld-linux-x86-64.so.2 --library-path
/.cellbox/lib64 ...``), so nothing from the sandbox's own /lib is ever loaded.

Trees are content-addressed (``agentfs/<hash>``) and never changed once built: a
running or suspended sandbox keeps using the exact files it started with, which CRIU
needs at restore (it reopens the mapped ``.so`` files by path).
"""

from __future__ import annotations

import compileall
import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import cellbox

MOUNT_POINT = "/.cellbox"
_SKIP_STDLIB = {
    "test", "tests", "idlelib", "tkinter", "turtledemo", "ensurepip", "site-packages",
    "dist-packages", "lib2to3", "pydoc_data", "venv", "__phello__",
}
_SKIP_PREFIXES = ("config-",)
_AGENT_DEPS = ("h11", "wsproto")


def _interpreter() -> Path:
    return Path(os.path.realpath(getattr(sys, "_base_executable", sys.executable)))


def _stdlib() -> Path:
    return Path(sysconfig.get_paths(vars={"base": sys.base_prefix, "installed_base": sys.base_prefix})["stdlib"])


def _lib_dynload() -> Path:
    import _json  # a C extension module that always lives in lib-dynload on Debian builds

    path = Path(getattr(_json, "__file__", "") or "")
    return path.parent if path.name else _stdlib() / "lib-dynload"


def _agent_sources() -> list[Path]:
    pkg = Path(cellbox.__file__).parent / "agent"
    files = sorted(p for p in pkg.rglob("*.py"))
    for dep in _AGENT_DEPS:
        spec = importlib.util.find_spec(dep)
        assert spec and spec.origin, dep
        files += sorted(Path(spec.origin).parent.rglob("*.py"))
    return files


# The agent's optimisation level (``-OO``); its .opt-2.pyc files are built with the tree.
OPTIMIZE = 2


def fingerprint() -> str:
    """Hash of everything that goes into the tree; a new hash means a new tree."""
    h = hashlib.sha256()
    h.update(f"optimize={OPTIMIZE}".encode())
    exe = _interpreter()
    h.update(f"{exe}:{exe.stat().st_size}:{exe.stat().st_mtime_ns}".encode())
    for f in _agent_sources():
        h.update(str(f).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _shared_libs(binaries: list[Path]) -> set[Path]:
    """Every shared library (and the loader) that ``binaries`` link, per ldd."""
    libs: set[Path] = set()
    for b in binaries:
        out = subprocess.run(["ldd", str(b)], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            m = re.search(r"(/\S+)\s+\(0x", line)
            if m:
                libs.add(Path(m.group(1)))
    return libs


def _copy_stdlib(src: Path, dest: Path) -> None:
    def ignore(directory: str, names: list[str]) -> set[str]:
        if Path(directory) == src:
            return {n for n in names if n in _SKIP_STDLIB or n.startswith(_SKIP_PREFIXES)}
        return {n for n in names if n in ("test", "tests")}

    shutil.copytree(src, dest, symlinks=False, ignore=ignore)


def ensure(data_dir_agentfs: Path) -> Path:
    """Build the tree for the current interpreter and agent code if missing; return it."""
    tree = data_dir_agentfs / fingerprint()
    if (tree / ".complete").exists():
        return tree
    # A private temporary name: two managers (or processes) may build at once.
    tmp = data_dir_agentfs / f".tmp-{tree.name}-{os.getpid()}-{os.urandom(4).hex()}"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "bin").mkdir(parents=True)
    (tmp / "lib64").mkdir()
    exe = _interpreter()
    shutil.copy2(exe, tmp / "bin" / "python3")
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    stdlib_dest = tmp / "lib" / version
    _copy_stdlib(_stdlib(), stdlib_dest)
    dynload = _lib_dynload()
    if not (stdlib_dest / "lib-dynload").exists():
        shutil.copytree(dynload, stdlib_dest / "lib-dynload")
    binaries = [exe, *sorted((stdlib_dest / "lib-dynload").glob("*.so"))]
    for lib in _shared_libs(binaries):
        target = tmp / "lib64" / lib.name
        if not target.exists():
            shutil.copy2(os.path.realpath(lib), target)
    # The agent package alone (with h11, wsproto and a launcher), byte-compiled.
    from cellbox.agent import bundle as agent_bundle

    agent_bundle.build(str(tmp / "site"))
    # Byte-compile so start-up reads .pyc files; the tree is read-only in the sandbox.
    # Both levels: the agent runs with -OO; helpers (e2b/fs_helper.py) without.
    for level in (0, OPTIMIZE):
        compileall.compile_dir(str(stdlib_dest), quiet=1, optimize=level, workers=0)
    (tmp / ".complete").write_text(tree.name)
    try:
        os.rename(tmp, tree)
    except OSError:
        # Someone else finished first. Never replace a tree: sandboxes may be using it.
        shutil.rmtree(tmp, ignore_errors=True)
        if not (tree / ".complete").exists():
            raise
    return tree


def loader_name() -> str:
    return "ld-linux-x86-64.so.2"


def agent_argv(port: int) -> list[str]:
    """The command that starts the agent inside the sandbox, as its PID 1.

    ``-S -E``: no site-packages and no PYTHON* variables, so neither the image's own
    Python setup nor ours leaks in either direction (the agent passes its environment
    on to the commands it runs). Python finds its prefix by walking up from the
    loader's directory (/.cellbox/lib64 -> /.cellbox/lib/pythonX.Y/os.py).
    ``-OO``: no docstrings in memory (and no asserts; the agent's are type narrowing):
    0.54 MiB less anonymous memory per idle agent, 9.86 -> 9.32 MiB (issue 15 density,
    measured from ``/proc/<pid>/smaps_rollup``; docs/ARCHITECTURE.md "Density").
    """
    return [
        f"{MOUNT_POINT}/lib64/{loader_name()}", "--library-path", f"{MOUNT_POINT}/lib64",
        f"{MOUNT_POINT}/bin/python3", "-S", "-E", "-B", "-OO", f"{MOUNT_POINT}/site/cellbox-agent.py",
        "--port", str(port),
    ]


def agent_env() -> list[str]:
    return []
