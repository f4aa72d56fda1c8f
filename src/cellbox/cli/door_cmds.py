"""Front-door verbs: ``key create/ls/revoke``, ``secret set/ls/rm``, ``quota get/set``,
``audit``, ``login`` and ``whoami``. All go through the sync SDK, like the sandbox verbs."""

from __future__ import annotations

import sys

import click

from ._common import (api_url_option, client, for_each, format_time, handle_errors, json_always_option, json_option,
                      print_json, print_table)


@click.group("key")
def key() -> None:
    """API keys (admin keys only)."""


@key.command("create")
@click.option("--project", default="default", show_default=True, help="The project the key acts on.")
@click.option("--role", type=click.Choice(["member", "admin"]), default="member", show_default=True)
@click.option("--expires", default=None, metavar="30d", help="Lifetime: a number and s/m/h/d [never].")
@click.option("--name", default=None, help="A label shown by key ls.")
@api_url_option
@json_option
@handle_errors
def key_create(project: str, role: str, expires: str | None, name: str | None, api_url: str | None,
               as_json: bool) -> None:
    """Make a key and print it (shown this once: the server keeps only its hash)."""
    with client(api_url) as c:
        made = c.create_key(project=project, role=role, expires=expires, name=name)
    if as_json:
        print_json(made)
    else:
        click.echo(made["key"])


@key.command("ls")
@click.option("--project", default=None, help="Only this project's keys.")
@api_url_option
@json_option
@handle_errors
def key_ls(project: str | None, api_url: str | None, as_json: bool) -> None:
    with client(api_url) as c:
        keys = c.list_keys(project)
    if as_json:
        print_json(keys)
        return
    print_table(["ID", "PROJECT", "ROLE", "NAME", "CREATED", "EXPIRES", "LAST USED", "REVOKED"],
                [[k["id"], k["project"], k["role"], k["name"], format_time(k["created_at"]),
                  format_time(k["expires_at"]), format_time(k["last_used_at"]), "yes" if k["revoked"] else "no"]
                 for k in keys])


@key.command("revoke")
@click.argument("key_ids", nargs=-1, required=True)
@api_url_option
@json_option
@handle_errors
def key_revoke(key_ids: tuple[str, ...], api_url: str | None, as_json: bool) -> None:
    """Revoke keys by ID: their next request, on any server process, is refused."""
    with client(api_url) as c:
        for_each(key_ids, c.revoke_key, as_json)


@click.group("secret")
def secret() -> None:
    """Secrets of the key's project, given to sandboxes as environment variables."""


@secret.command("set")
@click.argument("name")
@api_url_option
@json_option
@handle_errors
def secret_set(name: str, api_url: str | None, as_json: bool) -> None:
    """Store NAME with the value read from stdin (one trailing newline is dropped)."""
    value = sys.stdin.read()
    if value.endswith("\n"):
        value = value[:-1]
    with client(api_url) as c:
        c.set_secret(name, value)
    if as_json:
        print_json({"name": name, "ok": True})
    else:
        click.echo(name)


@secret.command("ls")
@api_url_option
@json_option
@handle_errors
def secret_ls(api_url: str | None, as_json: bool) -> None:
    """Names only: values are never shown."""
    with client(api_url) as c:
        found = c.list_secrets()
    if as_json:
        print_json(found)
    else:
        print_table(["NAME", "UPDATED"], [[s["name"], format_time(s["updated_at"])] for s in found])


@secret.command("rm")
@click.argument("names", nargs=-1, required=True)
@api_url_option
@json_option
@handle_errors
def secret_rm(names: tuple[str, ...], api_url: str | None, as_json: bool) -> None:
    with client(api_url) as c:
        for_each(names, c.delete_secret, as_json)


@click.group("quota")
def quota() -> None:
    """Per-project limits (set by admins)."""


@quota.command("get")
@click.argument("project", default="default")
@api_url_option
@json_always_option
@handle_errors
def quota_get(project: str, api_url: str | None, as_json: bool) -> None:
    with client(api_url) as c:
        print_json(c.get_quota(project))


_LIMITS = ("running_sandboxes", "vcpus", "memory_mb", "disk_mb", "snapshots", "snapshot_bytes", "creates_per_minute")


@quota.command("set")
@click.argument("project")
@click.argument("limits", nargs=-1, required=True, metavar="NAME=VALUE...")
@api_url_option
@json_always_option
@handle_errors
def quota_set(project: str, limits: tuple[str, ...], api_url: str | None, as_json: bool) -> None:
    """Set limits, e.g. ``running_sandboxes=5 vcpus=8``; ``NAME=none`` removes one."""
    body: dict[str, float | int | None] = {}
    for item in limits:
        name, sep, value = item.partition("=")
        if not sep or name not in _LIMITS:
            raise click.BadParameter(f"{item!r}: expected NAME=VALUE with NAME one of {', '.join(_LIMITS)}")
        try:
            body[name] = None if value == "none" else float(value) if name == "vcpus" else int(value)
        except ValueError:
            raise click.BadParameter(f"{item!r}: {value!r} is not a number") from None
    with client(api_url) as c:
        print_json(c.set_quota(project, **body))


@click.command("audit")
@click.option("--project", default=None)
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@api_url_option
@json_option
@handle_errors
def audit(project: str | None, limit: int, api_url: str | None, as_json: bool) -> None:
    """The newest state-changing calls (admin keys only)."""
    with client(api_url) as c:
        entries = c.audit(project=project, limit=limit)
    if as_json:
        print_json(entries)
        return
    print_table(["TIME", "KEY", "PROJECT", "ACTION", "STATUS", "CLIENT"],
                [[format_time(e["at"]), e["key_id"], e["project"], e["action"], e["status"], e["client"]]
                 for e in entries])


@click.command("login")
@json_option
@handle_errors
def login(as_json: bool) -> None:
    """Store an API key (read from stdin) in ~/.config/cellbox/credentials (mode 0600)."""
    from ..credentials import save_credentials

    value = sys.stdin.readline().strip()
    if not value.startswith("cbx_"):
        raise click.BadParameter("expected a cellbox key (cbx_...) on stdin")
    path = save_credentials(value)
    if as_json:
        print_json({"saved_to": str(path)})
    else:
        click.echo(f"saved to {path}")


@click.command("whoami")
@api_url_option
@json_always_option
@handle_errors
def whoami(api_url: str | None, as_json: bool) -> None:
    """The key in use: its ID, role and project."""
    with client(api_url) as c:
        print_json(c.whoami())
