"""Plugin manifests: the `manifest.toml` beside each plugin's `__init__.py`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pixsim7.backend.main.infrastructure import manifests
from pixsim7.backend.main.infrastructure.manifests import (
    MANIFEST_FILENAME,
    ManifestError,
    read_toml,
    validate_document,
)

__all__ = [
    "MANIFEST_FILENAME", "PLUGIN_ID_PATTERN", "PLUGIN_KINDS", "PluginKind", "PluginManifest",
    "PluginManifestError", "load_manifest", "read_toml", "validate_document",
]

PLUGIN_ID_PATTERN = r"^[a-z0-9_]+$"
PluginKind = Literal["feature", "route"]
PLUGIN_KINDS: tuple[str, ...] = ("feature", "route")


class PluginManifestError(ManifestError):
    """A manifest cannot be read or is invalid; the message names the file and the field."""


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

    @field_validator("dependencies", mode="before")
    @classmethod
    def _dependencies_list(cls, value: Any) -> Any:
        # TOML arrays arrive as lists; strict mode would reject them for a tuple field.
        if isinstance(value, list):
            return tuple(value)
        if isinstance(value, tuple):
            return value
        raise ValueError("must be a list of plugin ids")

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
