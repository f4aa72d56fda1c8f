"""``cellbox cp``: copy a file into or out of a sandbox (streamed, any size)."""

from __future__ import annotations

import os
import re

import click

from ._common import api_url_option, client, handle_errors, json_option, print_json

# ``<sandbox id or name>:/absolute/path``; IDs and names are lowercase letters, digits and '-'.
_REMOTE = re.compile(r"^([a-z0-9][a-z0-9-]*):(/.*)$")


def parse_location(spec: str) -> tuple[str | None, str]:
    """``("sbx", "/path")`` for a sandbox side, ``(None, path)`` for a local one."""
    match = _REMOTE.match(spec)
    if match:
        return match.group(1), match.group(2)
    return None, spec


@click.command("cp")
@click.argument("src")
@click.argument("dst")
@api_url_option
@json_option
@handle_errors
def cp(src: str, dst: str, api_url: str | None, as_json: bool) -> None:
    """Copy SRC to DST, where exactly one of them is SANDBOX:/path.

    \b
      cellbox cp ./data.csv  my-sbx:/work/data.csv    # upload
      cellbox cp my-sbx:/work/out.json ./             # download into a directory
    """
    src_sbx, src_path = parse_location(src)
    dst_sbx, dst_path = parse_location(dst)
    if (src_sbx is None) == (dst_sbx is None):
        raise click.UsageError("exactly one of SRC and DST must be SANDBOX:/path")
    with client(api_url) as c:
        if dst_sbx is not None:
            if not os.path.isfile(src_path):
                raise click.UsageError(f"{src_path}: not a file")
            if dst_path.endswith("/"):
                dst_path += os.path.basename(src_path)
            size = c.connect(dst_sbx).upload_file(src_path, dst_path)
        else:
            assert src_sbx is not None
            if os.path.isdir(dst_path) or dst_path.endswith(os.sep):
                dst_path = os.path.join(dst_path, os.path.basename(src_path.rstrip("/")))
            size = c.connect(src_sbx).download_file(src_path, dst_path)
    if as_json:
        print_json({"source": src, "destination": dst, "bytes": size})
    else:
        click.echo(f"{size} bytes", err=True)
