"""``cellbox image``: build, pull, ls, describe, rm, register, preboot (spec §5, §6).

``build`` mirrors ``docker build``: ``cellbox image build -f Dockerfile -t NAME [CONTEXT]``
with ``--build-arg K=V``, ``--target`` and ``--no-cache``; the builder's output is shown
as it comes (on stderr, so stdout is only the image name). ``--preboot`` (and
``--warmup CMD``) give the image a memory snapshot of a booted sandbox, so sandboxes
start from it by restore instead of boot.
"""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING, Any

import click

from ._common import (
    api_url_option, client, for_each, format_time, handle_errors, json_always_option, json_option, print_json,
    print_table,
)

if TYPE_CHECKING:
    from ..sdk import ImageInfo


def _progress(quiet: bool) -> Any:
    if quiet:
        return None
    return lambda line: click.echo(line, err=True)


def _warmup(value: str | None) -> list[str] | None:
    return shlex.split(value) if value else None


def _show(info: ImageInfo, as_json: bool) -> None:
    if as_json:
        print_json(info.raw)
    else:
        click.echo(info.name)


def _preboot_options(fn: Any) -> Any:
    fn = click.option("--warmup", metavar="CMD", help="Run CMD in the booted sandbox before the memory snapshot "
                      "(implies --preboot).")(fn)
    return click.option("--preboot", is_flag=True, help="Carry a memory snapshot of a booted sandbox: "
                        "creating from the image is a restore, not a boot.")(fn)


@click.group("image")
def image() -> None:
    """Build, pull, register, list and remove images.

    \b
      cellbox image build -f Dockerfile -t NAME [CONTEXT]
      cellbox image pull HOST:PORT/NAME:TAG [-u USER --password-stdin]
      cellbox image register NAME SNAPSHOT_ID
      cellbox image ls | describe NAME | rm NAME... | preboot NAME | warm NAME SIZE | prune
    """


@image.command("build")
@click.argument("context", default=".", type=click.Path(exists=True, file_okay=False))
@click.option("-f", "--file", "dockerfile", type=click.Path(exists=True, dir_okay=False),
              help="The Dockerfile [default: CONTEXT/Dockerfile].")
@click.option("-t", "--tag", "name", required=True, help="The image's name (NAME[:TAG]).")
@click.option("--build-arg", "build_args", multiple=True, metavar="K=V", help="A build argument (repeatable).")
@click.option("--target", help="Build this stage of a multi-stage Dockerfile.")
@click.option("--no-cache", is_flag=True, help="Do not reuse cached layers.")
@click.option("-q", "--quiet", is_flag=True, help="Do not show the builder's output.")
@_preboot_options
@api_url_option
@json_option
@handle_errors
def build(context: str, dockerfile: str | None, name: str, build_args: tuple[str, ...], target: str | None,
          no_cache: bool, quiet: bool, preboot: bool, warmup: str | None, api_url: str | None,
          as_json: bool) -> None:
    """Build an image from a Dockerfile; prints its name."""
    args: dict[str, str] = {}
    for pair in build_args:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected K=V, got {pair!r}", param_hint="--build-arg")
        args[key] = value
    with client(api_url) as c:
        info = c.images.build(context, name, dockerfile=dockerfile, build_args=args, target=target,
                              no_cache=no_cache, preboot=preboot, warmup=_warmup(warmup),
                              on_progress=_progress(quiet))
    _show(info, as_json)


@image.command("pull")
@click.argument("reference")
@click.option("-u", "--username", help="Registry user (remembered for this registry).")
@click.option("--password-stdin", is_flag=True, help="Read the registry password from stdin.")
@click.option("-q", "--quiet", is_flag=True, help="Do not show skopeo's output.")
@_preboot_options
@api_url_option
@json_option
@handle_errors
def pull(reference: str, username: str | None, password_stdin: bool, quiet: bool, preboot: bool,
         warmup: str | None, api_url: str | None, as_json: bool) -> None:
    """Pull HOST[:PORT]/NAME[:TAG|@sha256:...] from a registry; prints its name."""
    password = None
    if username is not None:
        if not password_stdin:
            raise click.UsageError("--username needs --password-stdin")
        password = click.get_text_stream("stdin").read().rstrip("\n")
    with client(api_url) as c:
        info = c.images.pull(reference, username=username, password=password, preboot=preboot,
                             warmup=_warmup(warmup), on_progress=_progress(quiet))
    _show(info, as_json)


@image.command("ls")
@api_url_option
@json_option
@handle_errors
def ls(api_url: str | None, as_json: bool) -> None:
    """List images."""
    with client(api_url) as c:
        images = c.images.list()
    if as_json:
        print_json([i.raw for i in images])
        return
    print_table(
        ["Name", "Kind", "Source", "Pre-booted", "Warm", "Size MB", "In use", "Created At"],
        [[i.name, i.kind, i.source, "yes" if i.prebooted else "no", f"{i.warm_ready}/{i.warm_pool}",
          (i.size_bytes or 0) >> 20 if i.size_bytes else None, i.in_use, format_time(i.created_at)]
         for i in images],
    )


@image.command("describe")
@click.argument("name")
@api_url_option
@json_always_option
@handle_errors
def describe(name: str, api_url: str | None, as_json: bool) -> None:
    """Show everything known about an image (JSON)."""
    with client(api_url) as c:
        print_json(c.images.get(name).raw)


@image.command("rm")
@click.argument("names", nargs=-1, required=True)
@api_url_option
@json_option
@handle_errors
def rm(names: tuple[str, ...], api_url: str | None, as_json: bool) -> None:
    """Remove images (refused while a sandbox uses one)."""
    with client(api_url) as c:
        for_each(names, c.images.delete, as_json)


@image.command("register")
@click.argument("name")
@click.argument("snapshot_id")
@_preboot_options
@api_url_option
@json_option
@handle_errors
def register(name: str, snapshot_id: str, preboot: bool, warmup: str | None, api_url: str | None,
             as_json: bool) -> None:
    """Name a completed snapshot; a memory snapshot makes a pre-booted image."""
    with client(api_url) as c:
        info = c.images.register(name, snapshot_id, preboot=preboot, warmup=_warmup(warmup))
    _show(info, as_json)


@image.command("preboot")
@click.argument("name")
@click.option("--warmup", metavar="CMD", help="Run CMD in the booted sandbox before the memory snapshot.")
@api_url_option
@json_option
@handle_errors
def preboot(name: str, warmup: str | None, api_url: str | None, as_json: bool) -> None:
    """Give an image a memory snapshot of a booted sandbox (replacing an older one)."""
    with client(api_url) as c:
        info = c.images.preboot(name, warmup=_warmup(warmup))
    _show(info, as_json)


@image.command("warm")
@click.argument("name")
@click.argument("size", type=click.IntRange(0, 16))
@api_url_option
@json_option
@handle_errors
def warm(name: str, size: int, api_url: str | None, as_json: bool) -> None:
    """Keep SIZE running sandboxes of the image ready (0: none)."""
    with client(api_url) as c:
        info = c.images.set_warm_pool(name, size)
    _show(info, as_json)


@image.command("prune")
@api_url_option
@json_option
@handle_errors
def prune(api_url: str | None, as_json: bool) -> None:
    """Drop the build cache (and anything no image uses); prints how many cached images went."""
    with client(api_url) as c:
        removed = c.images.prune()
    if as_json:
        print_json({"removed": removed})
    else:
        click.echo(removed)


# Tensorlake's and Docker's words for the same verbs (issue 14 item 9): one command, two names.
image.add_command(build, "create")
image.add_command(pull, "import")
