"""Plugin manifests: the `manifest.toml` beside each plugin's `__init__.py`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pixsim7.backend.main.infrastructure.discovery import manifests
from pixsim7.backend.main.infrastructure.discovery.manifests import (
    MANIFEST_FILENAME,
    ManifestError,
    read_toml,
    validate_document,
)

__all__ = [
    "MANIFEST_FILENAME", "PLUGIN_ID_PATTERN", "PLUGIN_KINDS", "JobDeclaration", "PluginKind",
    "PluginManifest", "PluginManifestError", "load_manifest", "read_toml", "validate_document",
]

PLUGIN_ID_PATTERN = r"^[a-z0-9_]+$"
PYTHON_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
PluginKind = Literal["feature", "route"]
PLUGIN_KINDS: tuple[str, ...] = ("feature", "route")


class PluginManifestError(ManifestError):
    """A manifest cannot be read or is invalid; the message names the file and the field."""


class JobDeclaration(BaseModel):
    """One `[[jobs]]` table: a job kind the plugin's package provides to the worker.

    `function` names an `async def f(app, payload)` in the package and `payload` the pydantic
    model its payload must validate against; both are looked up when the plugin is enabled.
    """

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    kind: str = Field(pattern=r"^[a-z0-9_]+(\.[a-z0-9_]+)+$", max_length=64)
    function: str = Field(pattern=PYTHON_NAME_PATTERN)
    payload: str = Field(pattern=PYTHON_NAME_PATTERN)
    description: str = ""
    # Database and network outages are retried with backoff, like RetryableJobError.
    retry_on_outage: bool = False


class PluginManifest(BaseModel):
    """The validated contents of a plugin's `manifest.toml`."""

    # Strict and closed: a quoted boolean or a misspelt key is a packaging mistake worth reporting.
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    id: str = Field(pattern=PLUGIN_ID_PATTERN)
    name: str = Field(min_length=1)
    version: str = Field(min_length=1)
    kind: PluginKind
    description: str | None = None
    dependencies: tuple[str, ...] = ()
    required: bool = False
    enabled: bool = True
    prefix: str | None = None
    jobs: tuple[JobDeclaration, ...] = ()

    @field_validator("dependencies", mode="before")
    @classmethod
    def _dependencies_list(cls, value: Any) -> Any:
        # TOML arrays arrive as lists; strict mode would reject them for a tuple field.
        if isinstance(value, list):
            return tuple(value)
        if isinstance(value, tuple):
            return value
        raise ValueError("must be a list of plugin ids")

    @field_validator("jobs", mode="before")
    @classmethod
    def _jobs_list(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return tuple(value)
        raise ValueError("must be an array of [[jobs]] tables")

    @model_validator(mode="after")
    def _job_kinds(self) -> PluginManifest:
        # A worker loads feature plugins only, and each plugin's kinds live under its own id,
        # so two plugins (or a plugin and the core) can never claim the same kind.
        if self.jobs and self.kind != "feature":
            raise ValueError("field 'jobs': only feature plugins declare jobs (a worker loads "
                             "feature plugins, not route plugins)")
        seen: set[str] = set()
        for index, job in enumerate(self.jobs):
            if not job.kind.startswith(f"{self.id}."):
                raise ValueError(
                    f"field 'jobs.{index}.kind': {job.kind!r} must start with this plugin's id, "
                    f"as in {self.id + '.' + job.kind.rsplit('.', 1)[-1]!r}")
            if job.kind in seen:
                raise ValueError(f"field 'jobs.{index}.kind': {job.kind!r} is declared twice")
            seen.add(job.kind)
        return self

    @field_validator("dependencies", mode="after")
    @classmethod
    def _dependency_ids(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for dep in value:
            if not re.fullmatch(PLUGIN_ID_PATTERN, dep):
                raise ValueError(f"{dep!r} is not a plugin id (lowercase letters, digits, _)")
        if len(set(value)) != len(value):
            raise ValueError("lists the same plugin more than once")
        return value

    @field_validator("prefix", mode="after")
    @classmethod
    def _prefix_shape(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith("/") or value.endswith("/"):
            raise ValueError(f"{value!r} must start with '/' and must not end with '/'")
        return value


def load_manifest(path: Path, expected_kind: str | None = None) -> PluginManifest:
    """Read and validate one manifest; `expected_kind` is the kind the scanning manager loads."""
    manifest = manifests.load_manifest(path, PluginManifest, PluginManifestError)
    if expected_kind is not None and manifest.kind != expected_kind:
        raise PluginManifestError(
            path,
            f"field 'kind' is {manifest.kind!r} but this folder holds {expected_kind!r} plugins; "
            f"set kind = {expected_kind!r} or move the plugin to the {manifest.kind} plugin folder",
        )
    return manifest
