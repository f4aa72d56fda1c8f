"""``cellbox exec``, ``run``, ``ps`` and ``kill``: commands and processes in a sandbox."""

from __future__ import annotations

import signal as _signal
import sys
from typing import TYPE_CHECKING

import click

from .supervise_opts import Supervision, supervision_options
from ._common import (
    api_url_option,
    client,
    exit_status,
    handle_errors,
    json_option,
    parse_env,
    print_json,
    print_table,
)

if TYPE_CHECKING:
    from ..sdk import OutputLine, Sandbox

# Options must come before the sandbox and the command: everything after them is the command's.
_PASS_THROUGH = {"ignore_unknown_options": True, "allow_interspersed_args": False}


def _argv(command: tuple[str, ...]) -> tuple[str, ...]:
    """The command's argv, without a leading ``--`` (``cellbox exec SBX -- ls -la``)."""
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise click.UsageError("missing COMMAND")
    return command


def _print_line(line: OutputLine) -> None:
    stream = sys.stderr if line.stream == "stderr" else sys.stdout
    stream.write(line.line + "\n")
    stream.flush()


def _exec(
    sbx: Sandbox,
    argv: tuple[str, ...],
    timeout: float | None,
    workdir: str | None,
    env: dict[str, str],
    user: str | None,
    as_json: bool = False,
) -> int:
    """Run and return the shell's exit status; with ``as_json`` the output is collected
    and printed once, as ``{exit_code, signal, timed_out, stdout, stderr}``."""
    result = sbx.run(
        list(argv), env=env or None, working_dir=workdir, timeout=timeout, user=user,
        on_output=None if as_json else _print_line,
    )
    if as_json:
        print_json({"exit_code": result.exit_code, "signal": result.signal, "timed_out": result.timed_out,
                    "stdout": result.stdout, "stderr": result.stderr})
    elif result.timed_out:
        click.echo(f"cellbox: command timed out after {timeout:g}s", err=True)
    return exit_status(result.exit_code, result.signal)


@click.command("exec", context_settings=_PASS_THROUGH)
@click.option("-t", "--timeout", type=float, default=None, help="Kill the command after this many seconds.")
@click.option("-w", "--workdir", default=None, help="Working directory.")
@click.option("-e", "--env", multiple=True, metavar="K=V", help="Environment variable (repeatable).")
@click.option("--user", default=None, help="Run as this user (name, uid or uid:gid).")
@click.option("--detach", is_flag=True, help="Start in the background and print the PID.")
@supervision_options
@api_url_option
@json_option
@click.argument("sandbox")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@handle_errors
def exec_(
    sandbox: str,
    command: tuple[str, ...],
    timeout: float | None,
    workdir: str | None,
    env: tuple[str, ...],
    user: str | None,
    detach: bool,
    supervise: Supervision | None,
    api_url: str | None,
    as_json: bool,
) -> None:
    """Run COMMAND in SANDBOX, streaming its output; exit with its exit code.

    With --name, --restart or a --health-* flag it is a managed process the agent
    supervises: started in the background (as with --detach), its PID printed.
    """
    command = _argv(command)
    environ = parse_env(env)
    with client(api_url) as c:
        sbx = c.connect(sandbox)
        if detach or supervise is not None:
            s = supervise or Supervision(None, None, None)
            proc = sbx.start_process(list(command), env=environ or None, working_dir=workdir, user=user,
                                     name=s.name, restart=s.restart, health_check=s.health_check)
            if as_json:
                print_json(proc.info().raw)
            else:
                click.echo(proc.pid)
            return
        code = _exec(sbx, command, timeout, workdir, environ, user, as_json)
    sys.exit(code)


@click.command("run", context_settings=_PASS_THROUGH)
@click.option("-i", "--image", default=None, help="Image [server default].")
@click.option("-c", "--cpus", type=float, default=1.0, show_default=True, help="vCPUs.")
@click.option("-m", "--memory", "memory_mb", type=int, default=1024, show_default=True, help="Memory in MB.")
@click.option("--disk_mb", "--disk-mb", "disk_mb", type=int, default=None, help="Root disk in MB.")
@click.option("-t", "--timeout", type=float, default=None, help="Kill the command after this many seconds.")
@click.option("-w", "--workdir", default=None, help="Working directory.")
@click.option("-e", "--env", multiple=True, metavar="K=V", help="Environment variable (repeatable).")
@click.option("--user", default=None, help="Run as this user.")
@click.option("-k", "--keep", is_flag=True, help="Keep the sandbox afterwards (its ID goes to stderr).")
@click.option("-x", "--expose", type=int, multiple=True, help="Expose a port (repeatable).")
@click.option("-N", "--no-internet", is_flag=True, help="Block all egress.")
@api_url_option
@json_option
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@handle_errors
def run(
    command: tuple[str, ...],
    image: str | None,
    cpus: float,
    memory_mb: int,
    disk_mb: int | None,
    timeout: float | None,
    workdir: str | None,
    env: tuple[str, ...],
    user: str | None,
    keep: bool,
    expose: tuple[int, ...],
    no_internet: bool,
    api_url: str | None,
    as_json: bool,
) -> None:
    """Create a sandbox, run COMMAND in it, and terminate it (unless --keep)."""
    command = _argv(command)
    environ = parse_env(env)
    with client(api_url) as c:
        info = c.create(
            image,
            cpus,
            memory_mb,
            disk_mb,
            exposed_ports=list(expose) or None,
            allow_unauthenticated_access=True if expose else None,
            allow_internet_access=not no_internet,
        )
        try:
            sbx = c.connect(info.id)
            code = _exec(sbx, command, timeout, workdir, environ, user, as_json)
        finally:
            if keep:
                click.echo(f"sandbox: {info.id}", err=True)
            else:
                c.delete(info.id)
    sys.exit(code)


@click.command("ps")
@click.argument("sandbox")
@click.argument("process", required=False)
@api_url_option
@json_option
@handle_errors
def ps(sandbox: str, process: str | None, api_url: str | None, as_json: bool) -> None:
    """List the processes in SANDBOX (or show one PROCESS: a PID or a managed process's name)."""
    with client(api_url) as c:
        sbx = c.connect(sandbox)
        procs = [sbx.get_process(_process_ref(process)).info()] if process is not None else sbx.list_processes()
    if as_json:
        print_json([p.raw for p in procs] if process is None else procs[0].raw)
        return
    rows = []
    for p in procs:
        ended = p.exit_code if p.exit_code is not None else (f"signal {p.signal}" if p.signal else None)
        managed = p.managed or {}
        supervised = f"{p.name or '-'} {managed.get('status')} r{p.restart_count} {p.health_status}" if managed else None
        rows.append([p.pid, p.status, ended, supervised, " ".join([p.command, *p.args])])
    print_table(["PID", "Status", "Exit", "Managed", "Command"], rows)


def _process_ref(value: str) -> int | str:
    """A PID (all digits) or a managed process's name (Tensorlake's ``ProcessRef``)."""
    if value.isdigit():
        return int(value)
    if not value or "/" in value:
        raise click.BadParameter(f"{value!r}: expected a PID or a process name (no '/')", param_hint="PROCESS")
    return value


@click.command("kill")
@click.argument("sandbox")
@click.argument("process")
@click.option("-s", "--signal", "sig", default=None, help="Send this signal (name or number) instead of SIGKILL.")
@api_url_option
@json_option
@handle_errors
def kill(sandbox: str, process: str, sig: str | None, api_url: str | None, as_json: bool) -> None:
    """Kill PROCESS (a PID, or the name of a managed process) in SANDBOX.

    A managed process gets SIGTERM, then SIGKILL after its grace time, and is not
    restarted; a name that no process has is an error (exit 1).
    """
    ref = _process_ref(process)
    number = None if sig is None else _signal_number(sig)
    with client(api_url) as c:
        proc = c.connect(sandbox).get_process(ref)
        if number is None:
            proc.kill()
        else:
            proc.send_signal(number)
    if as_json:
        print_json({"process": ref, "signal": number if number is not None else int(_signal.SIGKILL)})


@click.command("restart")
@click.argument("sandbox")
@click.argument("process")
@api_url_option
@json_option
@handle_errors
def restart(sandbox: str, process: str, api_url: str | None, as_json: bool) -> None:
    """Restart the managed PROCESS (PID or name) in SANDBOX now; print its new PID.

    As ``tl sbx restart``: SIGTERM, SIGKILL after the grace time, a new incarnation at
    once (a stopped one is revived). A process started without supervision is refused.
    """
    with client(api_url) as c:
        info = c.connect(sandbox).get_process(_process_ref(process)).restart()
    if as_json:
        print_json(info.raw)
    else:
        click.echo(info.pid)


def _signal_number(sig: str) -> int:
    if sig.isdigit():
        return int(sig)
    name = sig.upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    try:
        return int(getattr(_signal, name))
    except AttributeError:
        raise click.BadParameter(f"unknown signal {sig!r}", param_hint="-s/--signal") from None
