"""The tensorlake SDK's ``Image(...).build()`` (its CAS Image Service protocol, served by
``api/image_service.py``) against cellbox's own ``Image(...).build()`` (``POST
/images/build``), same Dockerfile, interleaved in one run.

Starts its own ``cellbox server``; each round builds one uncached image both ways (a
``RUN`` with a fresh token, so buildah cannot reuse a layer), then deletes them. Both
end on the same buildah build; the difference is the protocol: admit + upload + seal +
polling every 3 s (the SDK's fixed interval) against one streamed request. Prints
p50/p95 and writes bench/results/tl_image_build-*.json.

    .venv/bin/python bench/tl_image_build.py [-n 5]
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import summarize, table, write  # noqa: E402
from pools import _server  # noqa: E402

from cellbox.credentials import find_api_key  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=5)
    args = ap.parse_args()
    log = Path(tempfile.gettempdir()) / f"bench-tl-image-{os.getpid()}.log"
    proc, url = _server(log)
    key = find_api_key() or ""
    os.environ.update(TENSORLAKE_API_URL=url.replace("127.0.0.1", "localhost"), TENSORLAKE_API_KEY=key,
                      CELLBOX_API_URL=url, CELLBOX_API_KEY=key)
    from tensorlake.image import Image as TlImage

    from cellbox import Image as CbImage, SandboxClient

    client = SandboxClient()  # CELLBOX_API_URL / CELLBOX_API_KEY
    http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=300)
    tl_ms: list[float] = []
    cb_ms: list[float] = []
    try:
        for i in range(args.n):
            for which, samples in (("tl", tl_ms), ("cb", cb_ms)) if i % 2 == 0 else (("cb", cb_ms), ("tl", tl_ms)):
                name, token = f"bench-{which}-{secrets.token_hex(3)}", secrets.token_hex(8)
                t0 = time.perf_counter()
                if which == "tl":
                    TlImage(name=name, base_image="cellbox/debian").run(f"echo {token} > /token").build()
                else:
                    CbImage(name, base_image="cellbox/debian").run(f"echo {token} > /token").build(client)
                samples.append((time.perf_counter() - t0) * 1000)
                http.delete(f"/images/{name}")
    finally:
        client.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    load = os.getloadavg()
    rows = {"tensorlake Image.build() (/images/v4)": summarize(tl_ms),
            "cellbox Image.build() (/images/build)": summarize(cb_ms)}
    print(table(f"one uncached RUN step, build to usable image, ms (n={args.n}, load {load[0]:.1f})", rows))
    print(write("tl_image_build", {"load_avg": load, "results": {
        k: {**v, "samples_ms": s} for (k, v), s in zip(rows.items(), (tl_ms, cb_ms))}}))


if __name__ == "__main__":
    main()
