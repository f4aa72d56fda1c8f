"""Request bodies of the lifecycle API (spec §2.1, §2.4), validated before any side effect.

Unknown fields are ignored (the SDK omits false/None values precisely so that servers
may be strict, and newer clients send fields we do not know yet). Types and ranges are
checked here; what depends on the host (cores, memory, images) is checked by the
manager. Every failure becomes ``400 {"error": "<field>: <problem>", "code":
"INVALID_REQUEST"}`` (``api/errors.py``). Fields cellbox cannot honour yet are refused
with ``NOT_SUPPORTED`` rather than accepted and ignored.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .. import ids
from ..errors import InvalidRequest, NotSupported
from ..images.names import builtin_alias
from ..manager.resize import Target
from ..manager.spec import CreateSpec
from ..manager.service import RESERVED_PORTS, Changes, CreateOptions
from ..network import policy
from ..network.policy import EgressPolicy

MAX_INT = 2**31 - 1


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


def _ports(ports: list[int] | None) -> list[int] | None:
    if ports is None:
        return None
    for port in ports:
        if not 1 <= port <= 65535:
            raise ValueError(f"port {port} is out of range 1..65535")
        if port in RESERVED_PORTS:
            raise ValueError(f"port {port} is reserved for the sandbox agent")
    return sorted(set(ports))


def _name(name: str | None) -> str | None:
    if name is not None and (problem := ids.name_problem(name)):
        raise ValueError(problem)
    return name


class Resources(_Model):
    cpus: float | None = Field(None, gt=0, le=1024, allow_inf_nan=False, description="vCPUs")
    memory_mb: int | None = Field(None, ge=1, le=MAX_INT, description="memory limit, MiB")
    disk_mb: int | None = Field(None, ge=1, le=MAX_INT, description="root disk size, MiB")
    gpus: list[Any] | None = None


class NetworkConfig(_Model):
    allow_internet_access: bool = True
    allow_out: list[str] = Field(default_factory=list)
    deny_out: list[str] = Field(default_factory=list)

    @property
    def unrestricted(self) -> bool:
        return self.allow_internet_access and not self.allow_out and not self.deny_out

    def to_policy(self) -> EgressPolicy | None:
        """The validated policy (400 naming a bad entry); None when unrestricted."""
        pol = policy.parse(self.allow_internet_access, self.allow_out, self.deny_out)
        return None if pol.unrestricted else pol


class CreateSandboxRequest(_Model):
    image: str | None = Field(None, min_length=1, max_length=512)
    resources: Resources | None = None
    timeout_secs: int | None = Field(None, ge=0, le=MAX_INT, description="0 or absent: no limit")
    entrypoint: list[str] | None = Field(None, max_length=1024)
    network: NetworkConfig | None = None
    snapshot_id: str | None = None
    name: str | None = Field(None, max_length=63)
    allow_unauthenticated_access: bool | None = None
    allow_unauthenticated_proxy_access: bool | None = Field(None, description="legacy alias")
    exposed_ports: list[int] | None = Field(None, max_length=1024)
    file_systems: list[Any] | None = None
    auto_resume: bool | None = None
    wait: bool = True
    max_pending_secs: int | None = Field(None, ge=0, le=MAX_INT)
    secret_names: list[str] | None = Field(None, max_length=100)

    @field_validator("name")
    @classmethod
    def _check_name(cls, v: str | None) -> str | None:
        return _name(v)

    @field_validator("exposed_ports")
    @classmethod
    def _check_ports(cls, v: list[int] | None) -> list[int] | None:
        return _ports(v)

    @model_validator(mode="after")
    def _consistent(self) -> "CreateSandboxRequest":
        if self.auto_resume is False and not self.name:
            raise ValueError("auto_resume: false needs a name (only named sandboxes suspend)")
        return self

    def to_options(self, namespace: str) -> CreateOptions:
        """The service's create request; refuses what cellbox cannot do yet."""
        if self.file_systems:
            raise _not_supported("file_systems: attached file systems are not supported")
        res = self.resources or Resources()
        if res.gpus:
            raise _not_supported("resources.gpus: this host has no GPUs")
        defaults = CreateSpec()
        spec = CreateSpec(
            image=builtin_alias(self.image)[1],  # tensorlake/ubuntu-minimal: the built-in image
            cpus=res.cpus if res.cpus is not None else defaults.cpus,
            memory_mb=res.memory_mb if res.memory_mb is not None else defaults.memory_mb,
            disk_mb=res.disk_mb,
            name=self.name,
            namespace=namespace,
            timeout_secs=self.timeout_secs,
            network=self.network.to_policy() if self.network is not None else None,
            explicit=frozenset(k for k in ("cpus", "memory_mb", "disk_mb") if getattr(res, k) is not None),
        )
        unauth = self.allow_unauthenticated_access
        if unauth is None:
            unauth = self.allow_unauthenticated_proxy_access
        return CreateOptions(
            snapshot_id=self.snapshot_id,
            spec=spec,
            exposed_ports=tuple(self.exposed_ports or ()),
            allow_unauthenticated_access=bool(unauth),
            auto_resume=self.auto_resume if self.auto_resume is not None else True,
            entrypoint=tuple(self.entrypoint) if self.entrypoint else None,
            secret_names=tuple(self.secret_names or ()),
        )


class UpdateSandboxRequest(_Model):
    name: str | None = Field(None, max_length=63)
    allow_unauthenticated_access: bool | None = None
    exposed_ports: list[int] | None = Field(None, max_length=1024)
    auto_resume: bool | None = None
    network: NetworkConfig | None = None
    resources: Resources | None = None

    @field_validator("name")
    @classmethod
    def _check_name(cls, v: str | None) -> str | None:
        return _name(v)

    @field_validator("exposed_ports")
    @classmethod
    def _check_ports(cls, v: list[int] | None) -> list[int] | None:
        return _ports(v)

    def to_changes(self) -> Changes:
        if "resources" in self.model_fields_set:  # live resize (manager/resize.py)
            return self._resize()
        return Changes(
            name=self.name,
            exposed_ports=self.exposed_ports,
            allow_unauthenticated_access=self.allow_unauthenticated_access,
            auto_resume=self.auto_resume,
            network_set="network" in self.model_fields_set,
            network=self.network.to_policy() if self.network is not None else None,
        )


    def _resize(self) -> Changes:
        others = sorted(self.model_fields_set - {"resources"})
        if others:
            raise InvalidRequest(f"resources: a resize cannot be combined with {', '.join(others)}")
        res = self.resources
        if res is None or (res.cpus is None and res.memory_mb is None and res.disk_mb is None):
            raise InvalidRequest("resources: name at least one of cpus, memory_mb, disk_mb")
        if res.gpus:
            raise _not_supported("resources.gpus: this host has no GPUs")
        return Changes(resize=Target(cpus=res.cpus, memory_mb=res.memory_mb, disk_mb=res.disk_mb))


def _not_supported(message: str) -> InvalidRequest:
    return NotSupported(message)


class SnapshotRequest(_Model):
    snapshot_type: Literal["memory", "filesystem"] = "filesystem"
    # Older docs' spelling: "full" = memory, "filesystem_only" = filesystem.
    snapshot_content_mode: Literal["full", "filesystem_only"] | None = None

    def kind(self) -> str:
        if self.snapshot_content_mode is not None:
            return "memory" if self.snapshot_content_mode == "full" else "filesystem"
        return self.snapshot_type
