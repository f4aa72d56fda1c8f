"""Command-line options of the agent.

Parsed by hand rather than with ``argparse`` purely for start-up time (argparse
and its gettext/re imports cost a few ms on the sandbox-creation hot path) --
the option set is small and flat.
"""

from __future__ import annotations

from .oom import DEFAULT_PATHS

# The agent's port: the one definition (the host's Settings.agent_port and the API's
# reserved port come from here; the agent cannot import them, it is copied alone).
DEFAULT_PORT = 9501

USAGE = """\
usage: python -m cellbox.agent [options]

  --host HOST              listen address (default 0.0.0.0)
  --port PORT              listen port (default 9501; 0 = pick a free one)
  --root DIR               root that file-API paths are confined to (default /;
                           processes are not affected by it)
  --default-workdir DIR    working_dir for processes that give none (default /)
  --oom-counter FILE       cgroup file with an 'oom_kill N' line; repeatable,
                           first readable wins; 'none' disables OOM detection
                           (default: /sys/fs/cgroup/memory.events, then
                           /sys/fs/cgroup/memory/memory.oom_control)
  --no-inherit-env         do not pass the agent's own environment (the image
                           ENV inside a sandbox; CELLBOX_* vars never) to children
  --max-output-lines N     lines kept per process (default 100000)
  --max-output-bytes N     bytes of text kept per process (default 16 MiB)
  --max-output-total N     bytes of output kept by all processes together
                           (default 256 MiB, and never more than 1/8 of the
                           sandbox's memory limit)
  --max-finished N         finished processes remembered (default 256)
  --drain-grace SECONDS    how long to wait for output EOF after a process
                           exits before reporting it finished (default 0.3)
  --shutdown-grace SECONDS SIGTERM -> SIGKILL delay on agent shutdown (default 3)
  --keepalive SECONDS      SSE ': ping' interval on idle streams (default 15)
  --subreaper              become a child subreaper (prctl) so orphans are
                           reaped even when not running as PID 1
  --quiet                  no log lines on stderr
"""


class Config:
    """Parsed options (plain attributes; see USAGE)."""

    def __init__(self) -> None:
        self.host = "0.0.0.0"
        self.port = DEFAULT_PORT
        self.root = "/"
        self.default_workdir = "/"
        self.oom_counters: tuple[str, ...] = DEFAULT_PATHS
        self.inherit_env = True
        self.max_output_lines = 100_000
        self.max_output_bytes = 16 << 20
        self.max_output_total = 256 << 20
        self.max_finished = 256
        self.drain_grace = 0.3
        self.shutdown_grace = 3.0
        self.keepalive = 15.0
        self.subreaper = False
        self.quiet = False


class UsageError(Exception):
    pass


_VALUED = {
    "--host": ("host", str),
    "--port": ("port", int),
    "--root": ("root", str),
    "--default-workdir": ("default_workdir", str),
    "--max-output-lines": ("max_output_lines", int),
    "--max-output-bytes": ("max_output_bytes", int),
    "--max-output-total": ("max_output_total", int),
    "--max-finished": ("max_finished", int),
    "--drain-grace": ("drain_grace", float),
    "--shutdown-grace": ("shutdown_grace", float),
    "--keepalive": ("keepalive", float),
}
_FLAGS = {
    "--no-inherit-env": ("inherit_env", False),
    "--subreaper": ("subreaper", True),
    "--quiet": ("quiet", True),
}


def parse_args(argv: list[str]) -> Config:
    cfg = Config()
    oom: list[str] | None = None
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg in ("-h", "--help"):
            raise UsageError("")
        if arg in _FLAGS:
            attr, flag_value = _FLAGS[arg]
            setattr(cfg, attr, flag_value)
            continue
        name, eq, value = arg.partition("=")
        if name not in _VALUED and name != "--oom-counter":
            raise UsageError(f"unknown option {arg!r}")
        if not eq:
            if i >= len(argv):
                raise UsageError(f"option {name} needs a value")
            value = argv[i]
            i += 1
        if name == "--oom-counter":
            oom = [] if oom is None else oom
            if value != "none":
                oom.append(value)
            continue
        attr, conv = _VALUED[name]
        try:
            setattr(cfg, attr, conv(value))
        except ValueError:
            raise UsageError(f"invalid value for {name}: {value!r}") from None
    if oom is not None:
        cfg.oom_counters = tuple(oom)
    if cfg.keepalive <= 0:
        raise UsageError("--keepalive must be positive")
    if not 0 <= cfg.port <= 65535:
        raise UsageError(f"invalid port {cfg.port}")
    return cfg
