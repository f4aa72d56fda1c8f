"""Pydantic types for the tools' inputs: what a model may send, checked before any call.

The MCP SDK builds each tool's JSON schema from these ``Annotated`` types and rejects
a call that does not fit with a message naming the field, so a tool body only ever
sees well-formed values. Paths are checked here too: the in-sandbox agent confines
every path to the sandbox anyway (it is the tenant's own filesystem), but a relative
path, a NUL byte or a ``..`` component is always a mistake worth a clear answer.
"""

from __future__ import annotations

import posixpath
import re
from typing import Annotated

from pydantic import AfterValidator, Field, StringConstraints

from . import limits

# An ID (21 of [0-9a-z]) or a name ([a-z][a-z0-9-]*): both are what the API accepts
# (``cellbox/ids.py``); anything else is refused before it reaches a URL.
SANDBOX_REF = r"^[0-9a-z][0-9a-z-]{0,62}$"
SandboxRef = Annotated[str, StringConstraints(pattern=SANDBOX_REF),
                       Field(description="Sandbox ID or name")]
SnapshotRef = Annotated[str, StringConstraints(pattern=r"^[0-9A-Za-z_-]{1,64}$"), Field(description="Snapshot ID")]
SandboxName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9-]{0,62}$"),
                        Field(description="A name (lowercase letters, digits, '-'); needed to suspend")]
ImageRef = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._/:@-]{0,254}$"),
                     Field(description="Image name, e.g. cellbox/debian (default) or team/app")]
NetworkRule = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9.:/*_-]{1,253}$"),
                        Field(description="An IP, a CIDR or a host name")]


def check_ref(ref: str) -> str:
    """``ref`` if it can name a sandbox; ValueError otherwise (for inputs pydantic does not see)."""
    if re.fullmatch(SANDBOX_REF, ref) is None:
        raise ValueError("sandbox_id is not a sandbox ID or name")
    return ref


def check_path(path: str) -> str:
    """An absolute, normalized path without NUL or ``..``; raise ValueError otherwise."""
    if "\x00" in path:
        raise ValueError("path must not contain NUL bytes")
    if not path.startswith("/"):
        raise ValueError("path must be absolute (start with '/')")
    if ".." in path.split("/"):
        raise ValueError("path must not contain '..' components")
    return posixpath.normpath(path) if path != "/" else path


SandboxPath = Annotated[str, StringConstraints(min_length=1, max_length=limits.PATH_MAX_CHARS),
                        AfterValidator(check_path), Field(description="Absolute path inside the sandbox")]
def check_no_nul(value: str) -> str:
    """A NUL byte would be cut by execve: refuse it rather than run a shorter command."""
    if "\x00" in value:
        raise ValueError("command must not contain NUL bytes")
    return value


Command = Annotated[str, StringConstraints(min_length=1, max_length=limits.COMMAND_MAX_CHARS),
                    AfterValidator(check_no_nul), Field(description="A shell command line, run with /bin/sh -c")]
Timeout = Annotated[float, Field(gt=0, le=limits.TIMEOUT_MAX, description="Seconds before the command is killed")]
OutputLimit = Annotated[int, Field(ge=1, le=limits.OUTPUT_MAX,
                                   description="Most bytes of stdout+stderr returned; past it the command is killed")]
Pid = Annotated[int, Field(gt=0, lt=1 << 22, description="Process ID from start_process")]
Tail = Annotated[int, Field(ge=1, le=limits.TAIL_MAX, description="Newest lines to return")]
EnvKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]
EnvValue = Annotated[str, StringConstraints(max_length=limits.ENV_VALUE_MAX_CHARS)]
Env = Annotated[dict[EnvKey, EnvValue], Field(max_length=limits.ENV_MAX_ENTRIES,
                                              description="Extra environment variables")]


def check_env_values(env: dict[str, str] | None) -> dict[str, str] | None:
    """Environment values reach execve: a NUL byte would cut them, so refuse it."""
    if env and any("\x00" in v for v in env.values()):
        raise ValueError("environment values must not contain NUL bytes")
    return env
