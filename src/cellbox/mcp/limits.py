"""Every size and time bound of the MCP tools, in one place.

An agent's tool call is untrusted input with a model behind it that may loop: each
bound keeps one call from holding the MCP server's memory or a sandbox for long. The
defaults fit a model's context (tens of KiB of output), the maxima what a caller may
ask for explicitly.
"""

from __future__ import annotations

KIB = 1024
MIB = 1024 * KIB

# Commands: the combined stdout+stderr kept per call; past it the command is killed
# (the agent kills a /run whose client hangs up) and the result says "truncated".
OUTPUT_DEFAULT = 64 * KIB
OUTPUT_MAX = 1 * MIB
COMMAND_MAX_CHARS = 64 * KIB
TIMEOUT_DEFAULT = 60.0
TIMEOUT_MAX = 600.0
ENV_MAX_ENTRIES = 64
ENV_VALUE_MAX_CHARS = 16 * KIB

# Files: reads are streamed and cut (``Sandbox.read_file(max_bytes=)``), writes are
# bounded by the JSON-RPC request that carries them.
READ_DEFAULT = 256 * KIB
READ_MAX = 4 * MIB
WRITE_MAX = 4 * MIB
PATH_MAX_CHARS = 4096
LIST_MAX_ENTRIES = 1000

# Background processes: the newest lines of a log.
TAIL_DEFAULT = 200
TAIL_MAX = 10_000

# Lifecycle.
CPUS_MIN, CPUS_MAX = 0.25, 16.0
MEMORY_MIN_MB, MEMORY_MAX_MB = 128, 65536
DISK_MAX_MB = 1 << 20
SANDBOX_TIMEOUT_MAX = 7 * 24 * 3600
CLONE_MAX = 16
LIST_MAX_SANDBOXES = 500
NETWORK_RULES_MAX = 256
STARTUP_TIMEOUT = 300.0
