"""Images: build and pull times, and time to interactive from each kind of image.

Starts its own ``cellbox server`` on free ports (warm pool off, so every create is the
path its image kind takes) and a ``docker-registry`` on loopback, then measures:

  build   cold (``--no-cache``, every step runs), cached (unchanged rebuild), pull of a
          new image from the loopback registry and of a second tag (layers shared)
  TTI     ``POST /sandboxes {"image": ...}`` + ``node -v`` through the proxy until it
          exits 0 (the method of bench/tti.py), for: the default image (boot), a
          Dockerfile build (boot), a registry pull (boot), a registered filesystem
          snapshot (boot), and pre-booted builds (CRIU restore), with and without a
          warm-up command, and a built image with a warm pool of its own (claim).
          The server runs with ``CELLBOX_PREBOOT_RESTORE=always`` so
          the pre-booted image without a warm-up is restored too: that row against the
          "Dockerfile build (boot)" row (same image) is the boot-vs-restore decision.

Prints a table, writes bench/results/images-<time>.json and images-latest.json, and a
box plot PNG.

    .venv/bin/python bench/images.py [-n 20] [--builds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import auth_headers, node_v_through_proxy, plot_boxes, summarize, table, wait_for_api, write  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.images import registry as registry_mod  # noqa: E402
from tests.sdk.live_server import free_port  # noqa: E402

HEADERS = {"X-Tensorlake-Request-Timeout-Ms": "120000", "X-Tensorlake-Request-Timeout-Grace-Ms": "5000"}
DOCKERFILE = """FROM cellbox/debian
ARG TOKEN=none
ENV APP_HOME=/srv/app
WORKDIR /srv/app
COPY app.py ./
RUN echo "$TOKEN" > token && python3 -c "import json, sqlite3" && mkdir -p /srv/data
RUN useradd -m bench
"""


def context(token: str) -> bytes:
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, text in (("Dockerfile", DOCKERFILE), ("app.py", f"print('bench {token}')\n")):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


async def job(client: httpx.AsyncClient, url: str, **kwargs) -> dict:
    """An image job (build or pull): read its JSON lines, return the final image."""
    async with client.stream("POST", url, timeout=1800, **kwargs) as resp:
        if resp.status_code != 200:
            raise RuntimeError(f"{url}: {resp.status_code} {(await resp.aread())[:300]!r}")
        async for line in resp.aiter_lines():
            if not line.strip():
                continue
            event = json.loads(line)
            if "image" in event:
                return event["image"]
            if "error" in event:
                raise RuntimeError(f"{url}: {event}")
    raise RuntimeError(f"{url}: no result")


async def build(client: httpx.AsyncClient, api: str, name: str, token: str, *, no_cache: bool = False,
                warmup: list[str] | None = None, preboot: bool = False) -> tuple[float, dict]:
    params: list[tuple[str, str]] = [("name", name), ("build_arg", f"TOKEN={token}")]
    if no_cache:
        params.append(("no_cache", "true"))
    if preboot:
        params.append(("preboot", "true"))
    params += [("warmup", w) for w in warmup or []]
    t0 = time.perf_counter()
    info = await job(client, f"{api}/images/build", params=params, content=context(token))
    return (time.perf_counter() - t0) * 1000, info


async def tti(client: httpx.AsyncClient, api: str, proxy: str, image: str | None) -> tuple[float | None, str | None]:
    body: dict = {"resources": {"cpus": 1.0, "memory_mb": 1024}}
    if image:
        body["image"] = image
    t0 = time.perf_counter()
    sid = None
    try:
        r = await client.post(f"{api}/sandboxes", json=body, headers=HEADERS, timeout=120)
        data = r.json()
        sid = data.get("sandbox_id")
        if r.status_code != 200 or data.get("status") != "running":
            print("  create failed:", r.status_code, str(data)[:300], file=sys.stderr)
            return None, sid
        created = time.perf_counter()
        ok = await node_v_through_proxy(client, proxy, sid)
        return ((time.perf_counter() - t0) * 1000 if ok else None), sid
    except Exception as exc:  # noqa: BLE001 - a failure is a data point
        phase = "create" if "created" not in locals() else f"run (created in {(created - t0) * 1000:.0f} ms)"
        print(f"  failure ({image or 'default'}, {phase}):", type(exc).__name__, exc, file=sys.stderr)
        return None, sid


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=20, help="creates per image kind")
    ap.add_argument("--builds", type=int, default=3, help="cold and cached builds each")
    args = ap.parse_args()
    api_port, proxy_port = free_port(), free_port()
    # Pre-booted images restore even without a warm-up here, so the restore path is measured.
    env = {**os.environ, "CELLBOX_WARM_POOL": "0", "CELLBOX_PREBOOT_RESTORE": "always"}
    log = open("/tmp/cellbox-bench-images-server.log", "wb")
    server = subprocess.Popen([str(ROOT / ".venv/bin/cellbox"), "server", "--api-port", str(api_port),
                               "--proxy-port", str(proxy_port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    registry = registry_mod.start()
    api, proxy = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{proxy_port}"
    run = secrets.token_hex(3)
    names: list[str] = []
    builds: dict[str, dict] = {}
    ttis: dict[str, dict] = {}
    snapshot_id = None
    try:
        async with httpx.AsyncClient(headers=auth_headers()) as client:
            await wait_for_api(client, api, 600)

            # -- build times ------------------------------------------------------------------
            built = f"bench/built-{run}"
            names.append(built)
            cold, cached = [], []
            for i in range(args.builds):
                ms, _ = await build(client, api, built, f"t{i}", no_cache=True)
                cold.append(ms)
            for _ in range(args.builds):
                ms, info = await build(client, api, built, f"t{args.builds - 1}")
                cached.append(ms)
            builds["build cold (--no-cache)"] = {"samples_ms": cold, **summarize(cold)}
            builds["build cached (unchanged)"] = {"samples_ms": cached, **summarize(cached)}
            print(f"  builds done: cold {min(cold):.0f} ms, cached {min(cached):.0f} ms", file=sys.stderr)

            # -- pull: first pull of a new image, then a second tag (every layer shared) --
            from cellbox.config import load

            layout = load().oci_dir
            repo = f"bench/pulled-{run}"
            registry.push(layout, f"{built}:latest", f"{repo}:v1")
            registry.push(layout, f"{built}:latest", f"{repo}:v2")
            creds = {"username": registry_mod.USER, "password": registry_mod.PASSWORD}
            pulls = {}
            for tag in ("v1", "v2"):
                ref = f"{registry.host}/{repo}:{tag}"
                names.append(ref)
                t0 = time.perf_counter()
                await job(client, f"{api}/images/pull", json={"image": ref, **creds})
                pulls[tag] = (time.perf_counter() - t0) * 1000
            builds["pull new image"] = {"samples_ms": [pulls["v1"]], **summarize([pulls["v1"]])}
            builds["pull 2nd tag (layers shared)"] = {"samples_ms": [pulls["v2"]], **summarize([pulls["v2"]])}

            # -- pre-booted images (same Dockerfile), with and without a warm-up ---------------
            pre = f"bench/preboot-{run}"
            warm = f"bench/warmup-{run}"
            names += [pre, warm]
            ms, _ = await build(client, api, pre, f"t{args.builds - 1}", preboot=True)
            builds["build cached + pre-boot"] = {"samples_ms": [ms], **summarize([ms])}
            ms, _ = await build(client, api, warm, f"t{args.builds - 1}",
                                warmup=["sh", "-c", "node -e 'require(\"http\")' && python3 -c 'import json'"])
            builds["build cached + pre-boot + warm-up"] = {"samples_ms": [ms], **summarize([ms])}

            # -- a registered filesystem snapshot -------------------------------------------
            r = await client.post(f"{api}/sandboxes", json={"resources": {"memory_mb": 512}}, headers=HEADERS,
                                  timeout=120)
            src = r.json()["sandbox_id"]
            snap = (await client.post(f"{api}/sandboxes/{src}/snapshot", timeout=300)).json()
            snapshot_id = snap["snapshot_id"]
            await client.delete(f"{api}/sandboxes/{src}", timeout=120)
            registered = f"bench/registered-{run}"
            names.append(registered)
            r = await client.post(f"{api}/images/register", json={"name": registered, "snapshot_id": snapshot_id},
                                  timeout=300)
            assert r.status_code == 200, r.text

            # -- the same built image with a warm pool of its own (a copy under another name) --
            warm_img = f"bench/warmpool-{run}"
            names.append(warm_img)
            await build(client, api, warm_img, f"t{args.builds - 1}")
            r = await client.put(f"{api}/images/{warm_img}/warm-pool", json={"size": 2}, timeout=300)
            assert r.status_code == 200, r.text
            for _ in range(600):
                if (await client.get(f"{api}/images/{warm_img}")).json()["warm_ready"] >= 2:
                    break
                await asyncio.sleep(0.2)

            # -- time to interactive from each kind -------------------------------------------
            kinds = {
                "default image (boot)": None,
                "Dockerfile build (boot)": built,
                "registry pull (boot)": f"{registry.host}/{repo}:v1",
                "registered fs snapshot (boot)": registered,
                "pre-booted, no warm-up (restore)": pre,
                "pre-booted + warm-up (restore)": warm,
                "Dockerfile build, warm pool of 2 (claim)": warm_img,
            }
            samples: dict[str, list[float]] = {k: [] for k in kinds}
            fails = {k: 0 for k in kinds}
            for _ in range(args.n):  # interleaved, so load drifts hit every kind alike
                for label, image in kinds.items():
                    ms, sid = await tti(client, api, proxy, image)
                    if ms is None:
                        fails[label] += 1
                    else:
                        samples[label].append(ms)
                    if sid:
                        await client.delete(f"{api}/sandboxes/{sid}", timeout=120)
            for label in kinds:
                ttis[label] = {"samples_ms": samples[label], **summarize(samples[label], fails[label])}
    finally:
        try:
            async with httpx.AsyncClient(headers=auth_headers()) as client:
                for name in names:
                    await client.delete(f"{api}/images/{name}", timeout=300)
                if snapshot_id:
                    await client.delete(f"{api}/snapshots/{snapshot_id}", timeout=300)
                await client.post(f"{api}/images/prune", timeout=600)  # the build cache of its builds
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(60)
            log.close()
            try:
                registry_mod.forget_credentials(registry, load_auth())
            finally:
                registry_mod.stop(registry)

    print(table("Image build and pull times, ms", builds))
    print()
    print(table("Time to interactive by image kind (create -> `node -v` exit 0), ms", ttis))
    path = write("images", {"args": vars(args), "builds": builds, "tti": ttis})
    plot_boxes({**ttis, **{k: v for k, v in builds.items() if len(v["samples_ms"]) > 1}}, path.with_suffix(".png"),
               "cellbox images: TTI by image kind, and build times", "ms (log)", "images-latest.png")
    print(f"results: {path}")


def load_auth() -> Path:
    from cellbox.images.tools import Tools
    from cellbox.config import load

    return Tools(load()).auth_file


if __name__ == "__main__":
    asyncio.run(main())
