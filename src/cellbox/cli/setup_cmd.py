"""``cellbox setup``: the host-side state cellbox needs, made idempotently.

System packages, CRIU and the virtualenv are made by ``scripts/setup.sh`` (it has to
run before Python dependencies exist); this command does the rest: data directory,
storage pool, the agent's tree, the default image, the bridge and nftables table, the
first admin key (``admin.key``) and the secrets' vault key.
Each step prints its name and time, and a failure names the step.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable

import click

from ..config import Settings, load
from ..errors import CellboxError


def _steps(settings: Settings, rebuild_image: bool) -> list[tuple[str, Callable[[], str]]]:
    from ..network import host
    from ..runtime import agentfs
    from ..storage import default_image, images, pool

    def data_dir() -> str:
        for d in (settings.data_dir, settings.sandboxes_dir, settings.agentfs, settings.data_dir / "tmp"):
            d.mkdir(parents=True, exist_ok=True)
        return str(settings.data_dir)

    def storage_pool() -> str:
        return str(pool.ensure_pool(settings))

    def agent_tree() -> str:
        return str(agentfs.ensure(settings.agentfs))

    def image() -> str:
        store = images.OciLayout(settings)
        if store.exists(settings.default_image) and not rebuild_image:
            asyncio.run(store.resolve(settings.default_image))
            return f"{settings.default_image} (cached)"
        digest = default_image.build(settings, store)
        asyncio.run(store.resolve(settings.default_image))
        return f"{settings.default_image} built ({digest[:19]})"

    def network() -> str:
        asyncio.run(host.ensure(settings))
        return f"bridge {settings.bridge} {settings.gateway}/{settings.subnet.prefixlen}, nft table inet {settings.nft_table}"

    def api_keys() -> str:
        from ..auth import bootstrap, vault

        vault.ensure_key(bootstrap.vault_key_path(settings))
        path, made = bootstrap.ensure_admin_key(settings)
        if made:
            return f"first admin key stored in {path} (mode 0600; root's cellbox CLI and SDK use it)"
        return f"an admin key exists ({path})"

    return [
        ("data directory", data_dir),
        ("storage pool", storage_pool),
        ("agent runtime", agent_tree),
        ("default image", image),
        ("network", network),
        ("api keys", api_keys),
    ]


def run_setup(settings: Settings, *, rebuild_image: bool = False, quiet: bool = False) -> None:
    steps = _steps(settings, rebuild_image)
    for i, (name, fn) in enumerate(steps, 1):
        t0 = time.monotonic()
        if not quiet:
            click.echo(f"[{i}/{len(steps)}] {name} ...", nl=False)
        try:
            detail = fn()
        except (CellboxError, OSError) as exc:
            click.echo("")
            click.secho(f"cellbox setup failed at step '{name}': {exc}", fg="red", err=True)
            sys.exit(1)
        if not quiet:
            click.echo(f" ok ({time.monotonic() - t0:.1f}s) {detail}")


@click.command("setup")
@click.option("--rebuild-image", is_flag=True, help="Rebuild the default image even if it exists.")
@click.option("--quiet", is_flag=True, help="Print nothing unless a step fails.")
@click.option("--tls-self-signed", is_flag=True,
              help="Also make a CA and a server certificate (data dir/tls) for cellbox server --tls.")
@click.option("--tls-name", "tls_names", multiple=True, metavar="NAME|IP",
              help="A name or address the certificate is for (repeatable; localhost and 127.0.0.1 always are; "
                   "*.DOMAIN for exposed-port host names).")
@click.option("--release", is_flag=True,
              help="Instead: unmount the storage pool (and free its loop device) when no sandbox is in it, "
                   "and CRIU's kernel-probe tmpfs; "
                   "the next setup mounts it again. `make test` does this after the suite.")
def setup(rebuild_image: bool, quiet: bool, tls_self_signed: bool, tls_names: tuple[str, ...], release: bool) -> None:
    """Prepare this host: data dir, storage pool, agent runtime, default image, network, API keys."""
    settings = load()
    if release:
        from ..storage.pool import release_pool

        from ..runtime import criu_cache

        try:
            click.echo(release_pool(settings))
            click.echo(criu_cache.release())  # CRIU's kernel-probe cache (runtime/criu_cache.py)
        except CellboxError as exc:
            raise click.ClickException(exc.message) from exc
        return
    run_setup(settings, rebuild_image=rebuild_image, quiet=quiet)
    if tls_self_signed:
        from ..auth.tls import make_self_signed, tls_dir

        names = list(dict.fromkeys([*tls_names, "localhost", "127.0.0.1", "::1"]))
        ca, cert, key = make_self_signed(tls_dir(settings), names)
        click.echo(f"TLS: certificate {cert} (key {key}) for {', '.join(names)}; clients trust {ca}\n"
                   f"     serve with: cellbox server --tls --api-listen 0.0.0.0:8900 --proxy-listen 0.0.0.0:9443")
