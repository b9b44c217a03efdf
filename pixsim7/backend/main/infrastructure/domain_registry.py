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

from sqlalchemy import Table

from pixsim7.backend.main.infrastructure.database.base import Base
from pixsim7.backend.main.infrastructure.ordering import stable_dependency_order
from pixsim7.backend.main.infrastructure.plugins.manifest import read_toml
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

MANIFEST_NAME = "manifest.toml"
MODELS_NAME = "models.py"
MODULE_PREFIX = "pixsim7_domain_models"

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MANIFEST_KEYS = ("name", "depends_on", "models", "description")
# The folder of the `pixsim7.backend.main` package, for the importable name of bundled packages.
_MAIN_PACKAGE_DIR = Path(__file__).resolve().parents[1]
_MAIN_PACKAGE_NAME = "pixsim7.backend.main"


class DomainRegistryError(Exception):
    """A domain model package cannot be loaded; the message names the file and the problem."""


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
    directory = Path(directory)
    if not directory.exists():
        raise DomainRegistryError(
            f"domain models directory {directory} does not exist; create it or point "
            "DOMAIN_MODELS_DIR at the folder that holds the domain packages"
        )
    if not directory.is_dir():
        raise DomainRegistryError(
            f"domain models directory {directory} is a file, not a directory; point "
            "DOMAIN_MODELS_DIR at the folder that holds the domain packages"
        )
    folders = sorted(
        (p for p in directory.iterdir() if p.is_dir() and (p / MANIFEST_NAME).is_file()),
        key=lambda p: p.name,
    )
    manifests = [_read_manifest(folder) for folder in folders]

    by_name: dict[str, _Manifest] = {}
    for manifest in manifests:
        other = by_name.get(manifest.name)
        if other is not None:
            raise DomainRegistryError(
                f"{manifest.manifest_path}: package name {manifest.name!r} is already used by "
                f"{other.manifest_path}; give one of them a different name"
            )
        by_name[manifest.name] = manifest
    for manifest in manifests:
        for dependency in manifest.depends_on:
            if dependency not in by_name:
                known = ", ".join(sorted(by_name))
                raise DomainRegistryError(
                    f"{manifest.manifest_path}: depends_on names unknown package "
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
                    f"{manifest.manifest_path}: model {class_name!r} is already provided by "
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
    data = read_toml(path, lambda where, problem: DomainRegistryError(f"{where}: {problem}"))

    unknown = sorted(set(data) - set(_MANIFEST_KEYS))
    if unknown:
        raise DomainRegistryError(
            f"{path}: unknown key(s) {', '.join(unknown)}; "
            f"a manifest may contain {', '.join(_MANIFEST_KEYS)}"
        )
    if "name" not in data:
        raise DomainRegistryError(f'{path}: missing required key "name"')
    name = data["name"]
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        raise DomainRegistryError(
            f'{path}: "name" must be a string made of letters, digits and underscores '
            f"(not starting with a digit), got {name!r}"
        )
    depends_on = _string_list(path, data, "depends_on", required=False)
    if "models" not in data:
        raise DomainRegistryError(f'{path}: missing required key "models" (a list of class names)')
    model_names = _string_list(path, data, "models", required=True)
    for model_name in model_names:
        if not _IDENTIFIER.fullmatch(model_name):
            raise DomainRegistryError(f'{path}: "models" entry {model_name!r} is not a class name')
    duplicates = sorted({m for m in model_names if model_names.count(m) > 1})
    if duplicates:
        raise DomainRegistryError(f'{path}: "models" lists {", ".join(duplicates)} more than once')
    description = data.get("description")
    if description is not None and not isinstance(description, str):
        raise DomainRegistryError(
            f'{path}: "description" must be a string, got {type(description).__name__}'
        )
    return _Manifest(
        name=name,
        folder=folder,
        manifest_path=path,
        # Listing a dependency twice is harmless; keep the first mention.
        depends_on=tuple(dict.fromkeys(depends_on)),
        model_names=tuple(model_names),
        description=description,
    )


def _string_list(path: Path, data: dict[str, Any], key: str, *, required: bool) -> list[str]:
    value = data.get(key, [] if not required else None)
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise DomainRegistryError(
            f'{path}: "{key}" must be a list of strings, got {type(value).__name__} {value!r}'
        )
    return value


def _dependency_order(manifests: list[_Manifest]) -> list[str]:
    # Among packages ready at the same time the one discovered first (folder name order) goes
    # first, so the order is the same on every run.
    order, blocked = stable_dependency_order(
        [m.name for m in manifests], {m.name: m.depends_on for m in manifests}
    )
    if blocked:
        by_name = {m.name: m for m in manifests}
        cycle = _find_cycle(set(blocked), by_name)
        paths = ", ".join(str(by_name[n].manifest_path) for n in dict.fromkeys(cycle))
        raise DomainRegistryError(
            f"dependency cycle between domain packages: {' -> '.join(cycle)} "
            f"(manifests: {paths}); remove one of these depends_on entries"
        )
    return order


def _find_cycle(blocked: set[str], by_name: dict[str, _Manifest]) -> list[str]:
    # Every blocked package waits on another blocked one, so walking dependencies from any of
    # them must revisit a package; the walk from that point on is the cycle.
    start = min(blocked, key=lambda n: by_name[n].folder.name)
    path = [start]
    seen = {start: 0}
    current = start
    while True:
        current = next(d for d in by_name[current].depends_on if d in blocked)
        if current in seen:
            return path[seen[current] :] + [current]
        seen[current] = len(path)
        path.append(current)


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
            f"{manifest.folder}: has {MANIFEST_NAME} but no {MODELS_NAME}; add {MODELS_NAME} "
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
                f"{manifest.manifest_path}: domain package {manifest.name!r} was already loaded "
                f"in this process from {existing_file}; a package name can come from one folder "
                "only, so rename one of the two packages"
            )

    spec = importlib.util.spec_from_file_location(module_name, resolved)
    if spec is None or spec.loader is None:
        raise DomainRegistryError(f"{resolved}: cannot be imported as a Python module")
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
            f"{resolved}: importing it failed with {type(exc).__name__}: {exc}"
        ) from exc
    return module


def _model_class(manifest: _Manifest, module: ModuleType, class_name: str) -> type:
    models_path = manifest.folder / MODELS_NAME
    model = getattr(module, class_name, None)
    if model is None:
        raise DomainRegistryError(
            f"{manifest.manifest_path}: lists model {class_name!r} but {models_path} defines "
            "no such class; define it there or remove it from the manifest"
        )
    if not isinstance(model, type) or not issubclass(model, Base):
        raise DomainRegistryError(
            f"{manifest.manifest_path}: {class_name!r} in {models_path} is not a model on the "
            "shared Base; subclass pixsim7.backend.main.infrastructure.database.base.Base"
        )
    if not isinstance(getattr(model, "__table__", None), Table):
        raise DomainRegistryError(
            f"{manifest.manifest_path}: {class_name!r} in {models_path} has no table; give it a "
            "__tablename__ and columns"
        )
    return model


domain_registry = StateForwarder("domain_registry")
