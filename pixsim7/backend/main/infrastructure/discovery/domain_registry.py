"""Discovers domain model packages, validates their manifests and orders them by dependency.

A package is a folder holding `manifest.toml` (name, depends_on, models, description) and a
`models.py` that defines the listed SQLAlchemy models on the shared declarative `Base`.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import Table

from pixsim7.backend.main.infrastructure.adapters.database.base import Base
from pixsim7.backend.main.infrastructure.discovery.manifests import (
    MANIFEST_FILENAME,
    ManifestError,
    cycle_path,
    dependency_cycles,
    dependency_order,
    load_manifest,
    manifest_folders,
)
from pixsim7.backend.main.shared.app_context import StateForwarder

__all__ = [
    "MANIFEST_NAME",
    "MODELS_NAME",
    "MODULE_PREFIX",
    "DomainModelRegistry",
    "DomainPackage",
    "DomainRegistryError",
    "domain_registry",
    "init_domain_registry",
]

MANIFEST_NAME = MANIFEST_FILENAME
MODELS_NAME = "models.py"
MODULE_PREFIX = "pixsim7_domain_models"

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# The folder of the `pixsim7.backend.main` package, for the importable name of bundled packages.
_MAIN_PACKAGE_DIR = Path(__file__).resolve().parents[2]  # infrastructure/discovery/ -> main/
_MAIN_PACKAGE_NAME = "pixsim7.backend.main"


class DomainRegistryError(ManifestError):
    """A domain model package cannot be loaded; the message names the file and the problem."""


class DomainManifest(BaseModel):
    """The validated contents of a domain package's `manifest.toml`."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    name: str = Field(pattern="^" + _IDENTIFIER.pattern + "$")
    depends_on: list[str] = []
    models: list[str]
    description: str | None = None

    @field_validator("models")
    @classmethod
    def _class_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not _IDENTIFIER.fullmatch(name):
                raise ValueError(f"{name!r} is not a class name")
        duplicates = sorted({m for m in value if value.count(m) > 1})
        if duplicates:
            raise ValueError(f"lists {', '.join(duplicates)} more than once")
        return value


@dataclass(frozen=True)
class DomainPackage:
    """One loaded domain model package."""

    name: str
    path: Path
    depends_on: tuple[str, ...]
    models: tuple[type, ...]
    description: str | None = None


@dataclass(frozen=True)
class _Manifest:
    name: str
    folder: Path
    manifest_path: Path
    depends_on: tuple[str, ...]
    model_names: tuple[str, ...]
    description: str | None


class DomainModelRegistry:
    """The domain packages of one app, in dependency order, and the models they define."""

    def __init__(self, packages: Mapping[str, DomainPackage]) -> None:
        self.packages: dict[str, DomainPackage] = dict(packages)
        self.models: list[type] = [m for package in self.packages.values() for m in package.models]
        self._by_name: dict[str, type] = {m.__name__: m for m in self.models}

    def __repr__(self) -> str:
        return f"<DomainModelRegistry packages={list(self.packages)}>"

    def __len__(self) -> int:
        return len(self.packages)

    def model(self, name: str) -> type:
        """The model class called `name`; KeyError listing the known models if there is none."""
        try:
            return self._by_name[name]
        except KeyError:
            known = ", ".join(sorted(self._by_name)) or "none"
            raise KeyError(
                f"no domain model named {name!r}; known models: {known}. "
                f"Add it to a package's models.py and list it in that package's {MANIFEST_NAME}"
            ) from None

    @property
    def tables(self) -> list[Table]:
        """The tables behind the models, in package then model order, each once."""
        tables: dict[Table, None] = {}
        for model in self.models:
            tables.setdefault(model.__table__, None)  # type: ignore[attr-defined]
        return list(tables)

    def table_names(self) -> list[str]:
        """Names of `tables`, in the same order."""
        return [table.fullname for table in self.tables]

    def summary(self) -> dict[str, Any]:
        """Package, model and table names in order; JSON-able and free of filesystem paths."""
        return {
            "packages": list(self.packages),
            "models": [model.__name__ for model in self.models],
            "tables": self.table_names(),
        }


def init_domain_registry(directory: Path) -> DomainModelRegistry:
    """Load every package under `directory` (one subfolder each) into a new registry."""
    folders = manifest_folders(Path(directory), "domain_models_dir")
    manifests = [_read_manifest(folder) for folder in folders]

    by_name: dict[str, _Manifest] = {}
    for manifest in manifests:
        other = by_name.get(manifest.name)
        if other is not None:
            raise DomainRegistryError(
                manifest.manifest_path, f"package name {manifest.name!r} is already used by "
                f"{other.manifest_path}; give one of them a different name"
            )
        by_name[manifest.name] = manifest
    for manifest in manifests:
        for dependency in manifest.depends_on:
            if dependency not in by_name:
                known = ", ".join(sorted(by_name))
                raise DomainRegistryError(
                    manifest.manifest_path, f"depends_on names unknown package "
                    f"{dependency!r}; packages found in {directory}: {known}"
                )

    packages: dict[str, DomainPackage] = {}
    defined_in: dict[str, _Manifest] = {}
    for name in _dependency_order(manifests):
        manifest = by_name[name]
        module = _load_models_module(manifest)
        models = []
        for class_name in manifest.model_names:
            model = _model_class(manifest, module, class_name)
            owner = defined_in.get(model.__name__)
            if owner is not None:
                raise DomainRegistryError(
                    manifest.manifest_path, f"model {class_name!r} is already provided by "
                    f"package {owner.name!r} ({owner.manifest_path}); model names must be unique"
                )
            defined_in[model.__name__] = manifest
            models.append(model)
        packages[name] = DomainPackage(
            name=name,
            path=manifest.folder,
            depends_on=manifest.depends_on,
            models=tuple(models),
            description=manifest.description,
        )
    return DomainModelRegistry(packages)


def _read_manifest(folder: Path) -> _Manifest:
    path = folder / MANIFEST_NAME
    manifest = load_manifest(path, DomainManifest, DomainRegistryError)
    return _Manifest(
        name=manifest.name,
        folder=folder,
        manifest_path=path,
        # Listing a dependency twice is harmless; keep the first mention.
        depends_on=tuple(dict.fromkeys(manifest.depends_on)),
        model_names=tuple(manifest.models),
        description=manifest.description,
    )


def _dependency_order(manifests: list[_Manifest]) -> list[str]:
    # Among packages ready at the same time the one discovered first (folder name order) goes
    # first, so the order is the same on every run.
    names = [m.name for m in manifests]
    dependencies = {m.name: m.depends_on for m in manifests}
    order, blocked = dependency_order(names, dependencies)
    if blocked:
        by_name = {m.name: m for m in manifests}
        cycle = cycle_path(dependency_cycles(names, dependencies)[0], dependencies)
        paths = ", ".join(str(by_name[n].manifest_path) for n in dict.fromkeys(cycle))
        raise DomainRegistryError(
            by_name[cycle[0]].folder.parent,
            f"dependency cycle between domain packages: {' -> '.join(cycle)} "
            f"(manifests: {paths}); remove one of these depends_on entries"
        )
    return order


def _bundled_module_name(models_path: Path) -> str | None:
    # A package shipped inside pixsim7 is also importable by its dotted name; aliasing the two
    # keeps `import ...domain_models.core.models` from defining the same tables a second time.
    try:
        relative = models_path.with_suffix("").relative_to(_MAIN_PACKAGE_DIR)
    except ValueError:
        return None
    if not all(_IDENTIFIER.fullmatch(part) for part in relative.parts):
        return None
    return ".".join((_MAIN_PACKAGE_NAME, *relative.parts))


def _load_models_module(manifest: _Manifest) -> ModuleType:
    models_path = manifest.folder / MODELS_NAME
    if not models_path.is_file():
        raise DomainRegistryError(
            manifest.folder, f"has {MANIFEST_NAME} but no {MODELS_NAME}; add {MODELS_NAME} "
            "defining the models listed in the manifest"
        )
    resolved = models_path.resolve()
    module_name = f"{MODULE_PREFIX}.{manifest.name}"
    bundled_name = _bundled_module_name(resolved)

    # Models register their tables on the shared Base, so each file may run only once per
    # process: later registries (several apps, tests) reuse the module already loaded.
    for candidate in (module_name, bundled_name):
        existing = sys.modules.get(candidate) if candidate else None
        if existing is None:
            continue
        existing_file = getattr(existing, "__file__", None)
        if existing_file and Path(existing_file).resolve() == resolved:
            sys.modules.setdefault(module_name, existing)
            return existing
        if candidate == module_name:
            raise DomainRegistryError(
                manifest.manifest_path, f"domain package {manifest.name!r} was already loaded "
                f"in this process from {existing_file}; a package name can come from one folder "
                "only, so rename one of the two packages"
            )

    spec = importlib.util.spec_from_file_location(module_name, resolved)
    if spec is None or spec.loader is None:
        raise DomainRegistryError(resolved, "cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    # Registered before running it: SQLAlchemy resolves the annotations through sys.modules.
    aliases = [module_name]
    if bundled_name and bundled_name not in sys.modules:
        aliases.append(bundled_name)
    for alias in aliases:
        sys.modules[alias] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        for alias in aliases:
            sys.modules.pop(alias, None)
        raise DomainRegistryError(
            resolved, f"importing it failed with {type(exc).__name__}: {exc}"
        ) from exc
    return module


def _model_class(manifest: _Manifest, module: ModuleType, class_name: str) -> type:
    models_path = manifest.folder / MODELS_NAME
    model = getattr(module, class_name, None)
    if model is None:
        raise DomainRegistryError(
            manifest.manifest_path, f"lists model {class_name!r} but {models_path} defines "
            "no such class; define it there or remove it from the manifest"
        )
    if not isinstance(model, type) or not issubclass(model, Base):
        raise DomainRegistryError(
            manifest.manifest_path, f"{class_name!r} in {models_path} is not a model on the "
            "shared Base; subclass pixsim7.backend.main.infrastructure.adapters.database.base.Base"
        )
    if not isinstance(getattr(model, "__table__", None), Table):
        raise DomainRegistryError(
            manifest.manifest_path, f"{class_name!r} in {models_path} has no table; give it a "
            "__tablename__ and columns"
        )
    return model


domain_registry = StateForwarder("domain_registry")
