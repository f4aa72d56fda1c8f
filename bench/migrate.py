"""Moving a running sandbox between two nodes: live migration (CRIU post-copy) vs
suspend-move-resume, side by side in one run on one dev cluster.

A sandbox holds 256 MiB of touched memory (a Python process writing every page) and
a counter; a client polls it through the control plane's proxy the whole time. Per
move: **pause** = last answer before the move → first answer after it (what the
client sees), **total** = the API call's duration. The two ways alternate, each
moving the sandbox to the other node.

    .venv/bin/python bench/migrate.py [--rounds 3] [--mb 256]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from _common import summarize, table, write  # noqa: E402

from tests.cluster.devcluster import DevCluster  # noqa: E402

HOLD = ("import time\nb = bytearray({mb} << 20)\nfor i in range(0, len(b), 4096): b[i] = 1\n"
        "open('/tmp/held', 'w').write('yes')\nwhile True: time.sleep(1)\n")


class Poller:
    """Polls ``cat /tmp/count`` through the proxy; keeps the times of good answers."""

    def __init__(self, c: DevCluster, ref: str) -> None:
        self.c, self.ref = c, ref
        self.ok: list[float] = []
        self.errors = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                code, _ = self.c.run(self.ref, "cat /tmp/count")
            except httpx.HTTPError:  # a request cut short: counted, then retried
                code = 599
            if code == 200:
                self.ok.append(time.monotonic())
            else:
                self.errors += 1
            time.sleep(0.01)

    def pause(self, t0: float, t1: float) -> float:
        """The longest gap between good answers that overlaps [t0, t1]."""
        times = [t for t in self.ok if t0 - 5 <= t <= t1 + 30]
        gaps = [b - a for a, b in zip(times, times[1:]) if b >= t0 and a <= t1]
        return max(gaps) if gaps else float("nan")

    def wait_after(self, t: float, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not any(x > t for x in self.ok):
            time.sleep(0.05)
        time.sleep(0.5)

    def stop(self) -> None:
        self._stop.set()
        self._t.join()


def _sql(c: DevCluster, q: str) -> str:
    return subprocess.run(["runuser", "-u", "postgres", "--", "psql", "-h", str(c.base / "pg"), "-p",
                           c.env["CLUSTER_PG_PORT"], "-d", "cellbox", "-qtAc", q], check=True, capture_output=True,
                          text=True).stdout


def _phases(c: DevCluster) -> dict[str, float]:
    """The source's timing of the last migration (``livemigrate.Outbound.timing``, kept
    in its command's result): where the frozen window went."""
    out = _sql(c, "SELECT result->'timing' FROM commands WHERE kind = 'migrate' AND result IS NOT NULL "
                  "ORDER BY id DESC LIMIT 1").strip()
    return {k: round(v * 1000) for k, v in json.loads(out).items()} if out else {}


def live(c: DevCluster, sid: str) -> tuple[float, str]:
    with c.client() as http:
        t0 = time.monotonic()
        r = http.post(f"/sandboxes/{sid}/migrate", json={})
        if r.status_code != 200:  # it runs on where it was: say why, go on
            print(f"live migration failed: {r.status_code} {r.text[:300]}")
            return float("nan"), http.get(f"/sandboxes/{sid}").json()["node_id"]
        return time.monotonic() - t0, r.json()["node_id"]


def suspend_move_resume(c: DevCluster, sid: str, node: str) -> tuple[float, str]:
    """Suspend (memory snapshot to object storage), resume on the other node (this one
    marked draining so placement, and any auto-resume by the poller, goes elsewhere)."""
    _sql(c, f"UPDATE nodes SET state = 'draining' WHERE id = '{node}'")
    try:
        with c.client() as http:
            t0 = time.monotonic()
            http.post(f"/sandboxes/{sid}/suspend").raise_for_status()
            r = http.post(f"/sandboxes/{sid}/resume")
            if r.status_code in (400, 409):  # the poller's request resumed it first (or is resuming it: BUSY)
                r = http.get(f"/sandboxes/{sid}")
            r.raise_for_status()
            while r.json()["status"] != "running":
                time.sleep(0.05)
                r = http.get(f"/sandboxes/{sid}")
            return time.monotonic() - t0, r.json()["node_id"]
    finally:
        _sql(c, f"UPDATE nodes SET state = 'alive' WHERE id = '{node}'")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--mb", type=int, default=256)
    args = ap.parse_args()
    c = DevCluster.up(2)
    rows: dict[str, dict[str, list[float]]] = {"live migration": {"pause": [], "total": []},
                                               "suspend-move-resume": {"pause": [], "total": []}}
    load: list[float] = []
    phases: list[dict[str, float]] = []
    try:
        with c.client() as http:
            sb = http.post("/sandboxes", json={"name": "bench-mig", "memory_mb": args.mb + 256}).json()
        sid, node = sb["id"], sb["node_id"]
        hold = HOLD.format(mb=args.mb).replace("'", "'\"'\"'")
        code, out = c.run(sid, f"echo '{hold}' > /tmp/hold.py; (python3 /tmp/hold.py &) ; (i=0; while true; do "
                               "i=$((i+1)); echo $i > /tmp/count.new; mv /tmp/count.new /tmp/count; sleep 0.05; done) "
                               ">/dev/null 2>&1 & echo ok")  # by rename: a read never sees it empty
        assert code == 200, out
        c.wait_for(lambda: c.run(sid, "cat /tmp/held")[1] == "yes", 120, "memory touched")
        print(c.run(sid, "for p in $(pgrep -f hold.py); do grep VmRSS /proc/$p/status; done")[1])
        poller = Poller(c, sid)
        time.sleep(2)
        for _ in range(args.rounds):
            for way in rows:
                load.append(os.getloadavg()[0])
                t0 = time.monotonic()
                total, new = live(c, sid) if way == "live migration" else suspend_move_resume(c, sid, node)
                t1 = time.monotonic()
                poller.wait_after(t1)
                if total != total:  # failed: no pause to speak of
                    rows[way].setdefault("failed", []).append(1.0)
                    continue
                rows[way]["pause"].append(poller.pause(t0, t1) * 1000)
                rows[way]["total"].append(total * 1000)
                print(f"{way}: {node} -> {new}: pause {rows[way]['pause'][-1]:.0f} ms, total {total * 1000:.0f} ms")
                if way == "live migration":
                    phases.append(_phases(c))
                    print(f"  source's phases (ms since the start, frozen ones since the freeze): {phases[-1]}")
                node = new
        poller.stop()
        alive = c.run(sid, "cat /tmp/held; cat /tmp/count")
    finally:
        c.down()
    results = {f"{way}, {k}": summarize(v) for way, d in rows.items() for k, v in d.items() if k != "failed" and v}
    failed = {way: len(d.get("failed", [])) for way, d in rows.items()}
    print(table(f"moving a sandbox with {args.mb} MiB touched between 2 nodes (ms)", results))
    print(f"failed moves: {failed}; client errors while polling: {poller.errors}; load average during the run: "
          f"{min(load):.1f}-{max(load):.1f}; after the moves the sandbox answered {alive}")
    path = write("migrate", {"mb": args.mb, "rounds": args.rounds, "results": results, "raw": rows,
                             "client_errors": poller.errors, "phases": phases, "failed": failed, "load": load})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
