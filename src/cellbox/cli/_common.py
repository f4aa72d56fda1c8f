"""Helpers every ``cellbox`` command module shares: the API URL and ``--json``
options, error handling, the SDK client, tables and times.

The commands use the sync SDK only, imported inside the functions so ``cellbox
setup`` never loads httpx.
"""

from __future__ import annotations

import datetime
import functools
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from ..sdk import SandboxClient, SandboxInfo

F = TypeVar("F", bound=Callable[..., Any])


# -- shared helpers -------------------------------------------------------------------------


def _keep_api_key(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value:
        ctx.meta["cellbox.api_key"] = value


def api_url_option(fn: F) -> F:
    """``--api-url`` and ``--api-key`` for every verb that talks to the server. The key
    is not a parameter of the verbs: ``client()`` reads it from the click context, and
    without it the SDK's lookup order applies (``cellbox.credentials``)."""
    fn = click.option(
        "--api-key",
        default=None,
        metavar="KEY",
        expose_value=False,
        callback=_keep_api_key,
        help="API key [else $CELLBOX_API_KEY, $TENSORLAKE_API_KEY, cellbox login's file, admin.key].",
    )(fn)
    return click.option(
        "--api-url",
        envvar="CELLBOX_API_URL",
        default=None,
        metavar="URL",
        help="Lifecycle API URL [env CELLBOX_API_URL; default http://localhost:8900].",
    )(fn)


def json_option(fn: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(fn)


def json_always_option(fn: F) -> F:
    """``--json`` for a verb whose output is JSON anyway: accepted, so scripts can pass
    ``--json`` to every verb (tests/cli/test_json_everywhere.py)."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON (this verb always does).")(fn)


def handle_errors(fn: F) -> F:
    """Print SDK errors as one ``error:`` line on stderr and exit 1 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from ..errors import CellboxError

        try:
            return fn(*args, **kwargs)
        except CellboxError as exc:
            click.echo(f"error: {exc.message}", err=True)
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


def client(api_url: str | None) -> SandboxClient:
    from ..sdk import SandboxClient

    ctx = click.get_current_context(silent=True)
    return SandboxClient(api_url, ctx.meta.get("cellbox.api_key") if ctx else None)


def parse_env(pairs: Sequence[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected K=V, got {pair!r}", param_hint="-e/--env")
        env[key] = value
    return env


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


def format_time(value: int | None) -> str:
    if not value:
        return "-"
    seconds = value / 1e6 if value > 1e14 else value / 1e3 if value > 1e11 else float(value)
    return datetime.datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M:%S")


def print_table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False)
    for col in columns:
        table.add_column(col, no_wrap=True)
    for row in rows:
        table.add_row(*("-" if v is None else str(v) for v in row))
    # On a terminal rich fits the table to its width; into a pipe, never cut or wrap a cell.
    console = Console() if sys.stdout.isatty() else Console(width=4096, no_color=True)
    console.print(table, overflow="ignore", crop=False)


def sandbox_row(info: SandboxInfo) -> list[Any]:
    return [
        info.id,
        info.name,
        info.status,
        info.image,
        f"{info.cpus:g}" if info.cpus is not None else None,
        f"{info.memory_mb} MB" if info.memory_mb is not None else None,
        f"{info.disk_mb} MB" if info.disk_mb is not None else None,
        format_time(info.created_at),
    ]


SANDBOX_COLUMNS = ["ID", "Name", "Status", "Image", "CPUs", "Memory", "Disk", "Created At"]


def for_each(refs: Sequence[str], action: Callable[[str], object], as_json: bool = False) -> None:
    """Apply ``action`` to every ref, printing each that worked and an error line for each
    that did not; exit 1 if any failed (the others are still done). With ``as_json`` one
    list instead: ``[{"id", "ok", "error"?}]`` (errors also on stderr)."""
    from ..errors import CellboxError

    failed = False
    results: list[dict[str, Any]] = []
    for ref in refs:
        try:
            action(ref)
        except CellboxError as exc:
            click.echo(f"error: {ref}: {exc.message}", err=True)
            results.append({"id": ref, "ok": False, "error": exc.message})
            failed = True
        else:
            results.append({"id": ref, "ok": True})
            if not as_json:
                click.echo(ref)
    if as_json:
        print_json(results)
    if failed:
        sys.exit(1)


def exit_status(exit_code: int, signal: int | None) -> int:
    """The shell's convention: the exit code, or 128 + the signal that killed it."""
    if exit_code >= 0:
        return min(exit_code, 255)
    return 128 + (signal or -exit_code)
