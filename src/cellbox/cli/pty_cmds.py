"""``cellbox pty ls|attach|rm``: the terminal sessions of a sandbox (``tl sbx pty``).

A session outlives the client that made it (``ssh`` detaches on close; the SDK's
``Sandbox.pty`` too), so these find, rejoin and end them. Attaching needs the
session's token, which only its creator was given (a listing never shows one): a
session ID alone, of this sandbox or another, lets nobody type into it.
"""

from __future__ import annotations

import sys

import click

from ._common import api_url_option, client, for_each, format_time, handle_errors, json_option, print_json, print_table
from .terminal_cmds import _interact, _raw_mode, _terminal_size


@click.group("pty")
def pty() -> None:
    """Terminal sessions in a sandbox: list, attach, end."""


@pty.command("ls")
@click.argument("sandbox")
@api_url_option
@json_option
@handle_errors
def pty_ls(sandbox: str, api_url: str | None, as_json: bool) -> None:
    """The terminal sessions of SANDBOX, live and ended."""
    with client(api_url) as c:
        sessions = c.connect(sandbox).list_ptys()
    if as_json:
        print_json([s.raw for s in sessions])
        return
    rows = [[s.session_id, s.pid, "alive" if s.is_alive else f"exited {s.exit_code}", f"{s.cols}x{s.rows}",
             format_time(s.created_at), " ".join([s.command, *s.args])] for s in sessions]
    print_table(["Session", "PID", "Status", "Size", "Created At", "Command"], rows)


@pty.command("attach")
@click.argument("sandbox")
@click.argument("session_id")
@click.option("--token", required=True, envvar="CELLBOX_PTY_TOKEN",
              help="The session's token (given to its creator) [env CELLBOX_PTY_TOKEN].")
@api_url_option
@handle_errors
def pty_attach(sandbox: str, session_id: str, token: str, api_url: str | None) -> None:
    """Attach this terminal to SESSION_ID (interactive, like ``ssh``); Ctrl-D in the
    session's shell ends it, closing this terminal only detaches."""
    in_fd, out_fd = sys.stdin.fileno(), sys.stdout.fileno()
    with client(api_url) as c:
        term = c.connect(sandbox).attach_pty(session_id, token)
        try:
            term.resize(*_terminal_size(out_fd))
            with _raw_mode(in_fd):
                _interact(term, in_fd, out_fd)
        finally:
            term.close()
    code = term.exit_code
    sys.exit(0 if code is None else code if 0 <= code <= 255 else 255)


@pty.command("rm")
@click.argument("sandbox")
@click.argument("session_ids", nargs=-1, required=True)
@api_url_option
@json_option
@handle_errors
def pty_rm(sandbox: str, session_ids: tuple[str, ...], api_url: str | None, as_json: bool) -> None:
    """End each session (its process group is killed); prints each ID."""
    with client(api_url) as c:
        sbx = c.connect(sandbox)
        for_each(session_ids, sbx.kill_pty, as_json)
