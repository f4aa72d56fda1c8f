"""runc vs crun, side by side (interleaved), on this host: is crun worth it for cold starts?

Each round times, for both runtimes and in alternating order, ``run --bundle B id``
of ``/bin/true`` (create + start + wait + delete: the runtime's whole share of a
cold start) and ``run --detach`` + ``kill KILL`` + ``delete`` (a detached start, as
cellbox does it). The bundle is ``runc spec``'s default over the default image's
rootfs, read-only, in a cgroup of its own (``/coldpath-bench/<id>``). Debian's crun
refuses this host's hybrid cgroup layout unless an empty file hides
``/sys/fs/cgroup/unified/cgroup.controllers`` (research/baselines.md), so the whole
run happens in a private mount namespace with that bind mount, for both runtimes.

    sudo .venv/bin/python bench/runtimes.py [-n 30]   # needs crun (Debian: apt-get install crun)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import summarize, table, write  # noqa: E402

RUNTIMES = ("runc", "crun")


def _bundle(tmp: Path, rootfs: Path) -> Path:
    bundle = tmp / "bundle"
    bundle.mkdir()
    subprocess.run(["runc", "spec", "--bundle", str(bundle)], check=True)
    cfg = json.loads((bundle / "config.json").read_text())
    cfg["root"] = {"path": str(rootfs), "readonly": True}
    cfg["process"]["args"] = ["/bin/true"]
    cfg["process"]["terminal"] = False
    (bundle / "config.json").write_text(json.dumps(cfg))
    return bundle


def _set_cgroup(bundle: Path, cid: str) -> None:
    path = bundle / "config.json"
    cfg = json.loads(path.read_text())
    cfg["linux"]["cgroupsPath"] = f"/coldpath-bench/{cid}"
    path.write_text(json.dumps(cfg))


def _timed(argv: list[list[str]]) -> float:
    t0 = time.perf_counter()
    for a in argv:
        res = subprocess.run(a, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if res.returncode != 0:
            sys.exit(f"{' '.join(a)}: exit {res.returncode}: {res.stderr.strip()[-500:]}")
    return (time.perf_counter() - t0) * 1000


def measure(n: int, rootfs: Path) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {f"{rt} {what}": [] for rt in RUNTIMES for what in ("run", "run -d + kill + delete")}
    with tempfile.TemporaryDirectory(prefix="cellbox-runtimes-") as tmp_s:
        tmp = Path(tmp_s)
        bundle = _bundle(tmp, rootfs)
        for i in range(n):
            order = RUNTIMES if i % 2 == 0 else RUNTIMES[::-1]
            for rt in order:
                base = [rt, "--root", str(tmp / f"state-{rt}")]
                cid = f"cpb-{rt}-{i}"
                _set_cgroup(bundle, cid)
                out[f"{rt} run"].append(_timed([[*base, "run", "--bundle", str(bundle), cid]]))
                cid += "d"
                _set_cgroup(bundle, cid)
                t0 = time.perf_counter()
                _timed([[*base, "run", "--detach", "--bundle", str(bundle), cid]])
                subprocess.run([*base, "kill", cid, "KILL"], capture_output=True)  # /bin/true may be gone already
                out[f"{rt} run -d + kill + delete"].append((time.perf_counter() - t0) * 1000 + _delete(base, cid))
    return out


def _delete(base: list[str], cid: str) -> float:
    t0 = time.perf_counter()
    for _ in range(400):
        if subprocess.run([*base, "delete", cid], capture_output=True).returncode == 0:
            break
        time.sleep(0.002)
    return (time.perf_counter() - t0) * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=30)
    ap.add_argument("--rootfs", help="a rootfs to run /bin/true in (default: the default image's)")
    ap.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if not shutil.which("crun"):
        sys.exit("crun is not installed (Debian: apt-get install crun)")
    if not args.inner:
        # The private mount namespace with crun's hybrid-cgroup workaround, then this script again.
        empty = Path(tempfile.mkstemp(prefix="cellbox-empty-controllers-")[1])
        try:
            script = ('mount --bind "$0" /sys/fs/cgroup/unified/cgroup.controllers && exec "$@"')
            rc = subprocess.call(["unshare", "-m", "--propagation", "private", "sh", "-c", script, str(empty),
                                  sys.executable, __file__, "--inner", "-n", str(args.n),
                                  *(["--rootfs", args.rootfs] if args.rootfs else [])])
        finally:
            empty.unlink()
        sys.exit(rc)
    from cellbox.config import load

    rootfs = Path(args.rootfs) if args.rootfs else next(p for p in (load().pool / "images").iterdir() if p.is_dir())
    load0 = os.getloadavg()
    try:
        samples = measure(args.n, rootfs)
    finally:  # the per-run cgroups went with their containers; their parent goes now
        for parent in Path("/sys/fs/cgroup").glob("*/coldpath-bench"):
            try:
                parent.rmdir()
            except OSError:
                pass
    results = {k: {"samples_ms": v, **summarize(v)} for k, v in samples.items()}
    print(table(f"OCI runtime start, ms (Debian runc {_version('runc')} vs crun {_version('crun')}; "
                f"load {load0[0]:.1f} -> {os.getloadavg()[0]:.1f})", results))
    print(f"results: {write('runtimes', {'args': vars(args), 'rootfs': str(rootfs), 'results': results})}")


def _version(rt: str) -> str:
    out = subprocess.run([rt, "--version"], capture_output=True, text=True).stdout.split()
    return out[2] if len(out) > 2 else "?"


if __name__ == "__main__":
    main()
