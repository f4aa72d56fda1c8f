"""cellbox: self-hosted sandboxes for AI agents.

Kept import-light on purpose: the in-sandbox agent lives in ``cellbox.agent`` and is
copied into every sandbox on its own, and the CLI should start fast.
"""

__version__ = "0.1.0"

# The SDK's public names, imported on first use (PEP 562) so that ``import cellbox``
# stays light: the in-sandbox agent and ``cellbox setup`` never load httpx.
_SDK_EXPORTS = (  # == cellbox.sdk.__all__ (a test checks)
    "AsyncImages",
    "AsyncProcess",
    "AsyncPty",
    "AsyncSandbox",
    "AsyncSandboxClient",
    "AsyncTunnel",
    "AsyncVolumes",
    "CellboxError",
    "CommandResult",
    "Conflict",
    "CopyError",
    "DirectoryEntry",
    "HealthCheck",
    "Image",
    "ImageBuildError",
    "ImageInfo",
    "ImageNotFoundError",
    "Images",
    "InternalFailure",
    "InvalidRequest",
    "LimitExceeded",
    "NotFound",
    "OutputLine",
    "PermissionDenied",
    "Process",
    "ProcessInfo",
    "Pty",
    "PtySession",
    "RestartPolicy",
    "Sandbox",
    "SandboxClient",
    "SandboxConnectionError",
    "SandboxError",
    "SandboxInfo",
    "SandboxNotFoundError",
    "SandboxStartError",
    "SandboxUnavailable",
    "SnapshotError",
    "SnapshotInfo",
    "SnapshotNotFoundError",
    "Tunnel",
    "VolumeInfo",
    "VolumeMount",
    "VolumeNotFoundError",
    "VolumeVersion",
    "Volumes",
    "WaitTimeout",
)

__all__ = ["__version__", *_SDK_EXPORTS]


def __getattr__(name: str) -> object:
    if name in _SDK_EXPORTS:
        from . import errors

        if hasattr(errors, name):  # the shared error classes need no httpx
            value = getattr(errors, name)
        else:
            from . import sdk

            value = getattr(sdk, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'cellbox' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_SDK_EXPORTS))
