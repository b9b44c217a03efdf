"""Plugin manifests: the `manifest.toml` beside each plugin's `__init__.py`."""

from __future__ import annotations

import functools
import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

MANIFEST_FILENAME = "manifest.toml"
PLUGIN_ID_PATTERN = r"^[a-z0-9_]+$"
PluginKind = Literal["feature", "route"]
PLUGIN_KINDS: tuple[str, ...] = ("feature", "route")

ModelT = TypeVar("ModelT", bound=BaseModel)


class PluginManifestError(ValueError):
    """A manifest cannot be read or is invalid; the message names the file and the field."""

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


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


def read_toml(
    path: Path, error_cls: Callable[[Path, str], Exception] = PluginManifestError
) -> dict[str, Any]:
    """Parse a TOML file; syntax errors become `error_cls(path, message)` with the line number."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error_cls(path, f"file is missing; add a {path.name}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error_cls(path, f"cannot be read: {exc}") from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # The decoder's message carries "(at line N, column M)".
        raise error_cls(path, f"invalid TOML: {exc}") from exc


def validate_document(
    path: Path,
    data: dict[str, Any],
    model: type[ModelT],
    error_cls: type[Exception] = PluginManifestError,
) -> ModelT:
    """Validate `data` against `model`, naming each offending field in the error."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = ".".join(str(part) for part in err["loc"]) or "(document)"
            if err["type"] == "missing":
                problems.append(f"field {field!r} is required but missing")
            elif err["type"] == "extra_forbidden":
                problems.append(f"field {field!r} is not a known manifest field")
            else:
                problems.append(f"field {field!r}: {err['msg']}")
        raise error_cls(path, "; ".join(problems)) from None


def read_document(
    path: Path, model: type[ModelT], error_cls: type[Exception] = PluginManifestError
) -> ModelT:
    """`read_toml` then `validate_document`, reusing the result while the file keeps its mtime
    and size: manifest models are frozen, so every app may share them."""
    try:
        stat = path.stat()
    except OSError:  # read_toml names the problem
        return validate_document(path, read_toml(path, error_cls), model, error_cls)
    return _read_document(path, stat.st_mtime_ns, stat.st_size, model, error_cls)


@functools.lru_cache(maxsize=512)
def _read_document(path: Path, mtime_ns: int, size: int, model: type[ModelT],
                   error_cls: type[Exception]) -> ModelT:
    return validate_document(path, read_toml(path, error_cls), model, error_cls)


def load_manifest(path: Path, expected_kind: str | None = None) -> PluginManifest:
    """Read and validate one manifest; `expected_kind` is the kind the scanning manager loads."""
    manifest = read_document(path, PluginManifest)
    if expected_kind is not None and manifest.kind != expected_kind:
        raise PluginManifestError(
            path,
            f"field 'kind' is {manifest.kind!r} but this folder holds {expected_kind!r} plugins; "
            f"set kind = {expected_kind!r} or move the plugin to the {manifest.kind} plugin folder",
        )
    return manifest
