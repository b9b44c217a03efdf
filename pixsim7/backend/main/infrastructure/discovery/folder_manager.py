"""One lifecycle for the managers of a manifest folder (feature and route plugins, middleware).

Each item is a subfolder with a `manifest.toml` and an `__init__.py`. A manager discovers the
items, imports them in order under module names private to the manager, moves each forward
(loaded, enabled, installed, started) one phase at a time, and stops them in reverse. Each
item's state reads back as data (`as_dict`, `summary`). What differs between kinds is small:
how a manifest is read, what a duplicate or a failure means, and what each phase does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Generic, TypeVar

from pixsim7.backend.main.infrastructure.discovery.manifests import (
    MANIFEST_FILENAME,
    manifest_folders,
)
from pixsim7.backend.main.infrastructure.discovery.package_loader import (
    call_hook,
    describe_error,
    load_package,
    namespace_token,
    unload_namespace,
    unload_package,
)


@dataclass
class FolderItem:
    """What a manager knows about one item; `error` is `ExceptionClass: message`."""

    id: str
    name: str
    version: str
    folder: Path
    manifest_path: Path
    status: str = "discovered"
    error: str | None = None

    def details(self) -> dict[str, Any]:
        """The kind's own fields in `as_dict`."""
        return {}

    def as_dict(self) -> dict[str, Any]:
        """JSON-able view used by the manager's `summary()`."""
        return {"id": self.id, "name": self.name, "version": self.version,
                "status": self.status, **self.details(), "error": self.error}


ItemT = TypeVar("ItemT", bound=FolderItem)


class ManifestFolderManager(Generic[ItemT]):
    """Discovers, imports, advances and stops the items of one manifest folder.

    A kind defines `_read` (a manifest into an item), `_unreadable` and `_duplicate` (what a
    broken or repeated manifest means) and `_fail` (what a failing item means: recorded, or
    raised).
    """

    label = "item"  # how messages name one item: "feature plugin", "middleware"
    setting = ""  # the setting that points at the folder, for error messages
    logger = logging.getLogger("pixsim7")

    def __init__(self, directory: Path, namespace: str) -> None:
        self.directory = Path(directory)
        self._items: dict[str, ItemT] = {}
        self._modules: dict[str, ModuleType] = {}
        self._token = namespace_token(namespace)
        self._discovered = False

    def get(self, item_id: str) -> ItemT | None:
        """The state of `item_id`, or None if no such item was discovered."""
        return self._items.get(item_id)

    def module(self, item_id: str) -> ModuleType | None:
        """The item's imported package, or None if it never imported."""
        return self._modules.get(item_id)

    def ids(self, *statuses: str) -> list[str]:
        """Ids of the items in one of `statuses`, in order."""
        return [item_id for item_id, item in self._items.items() if item.status in statuses]

    def discover(self) -> dict[str, ItemT]:
        """Read every item folder's manifest (folders sorted by name)."""
        if self._discovered:
            raise RuntimeError(f"{self.label}s in {self.directory} were already discovered")
        self._discovered = True
        # A folder with only __init__.py is an item missing its manifest: reported.
        for folder in manifest_folders(self.directory, self.setting,
                                       markers=(MANIFEST_FILENAME, "__init__.py")):
            manifest_path = folder / MANIFEST_FILENAME
            try:
                item = self._read(folder, manifest_path)
            except Exception as exc:
                self._unreadable(folder, manifest_path, exc)
                continue
            first = self._items.get(item.id)
            if first is not None:
                self._duplicate(item, first)
                continue
            self._items[item.id] = item
        return self._items

    def _ready(self, status: str) -> Iterator[ItemT]:
        """The items in `status`, in order (read as the loop goes: a phase may fail others)."""
        for item in list(self._items.values()):
            if item.status == status:
                yield item

    @contextmanager
    def _phase(self, item: ItemT, done: str) -> Iterator[None]:
        """One phase of one item: it becomes `done`, or what it raised goes to `_fail`."""
        try:
            yield
        except Exception as exc:
            self._fail(item, exc)
        else:
            item.status = done

    def _import(self, item: ItemT, then: Callable[[ModuleType], Any] | None = None) -> Any:
        """Import the item's package (then `then(module)`); on failure nothing stays loaded."""
        try:
            module = self._modules[item.id] = load_package(item.folder, self._module_name(item))
            return then(module) if then is not None else module
        except BaseException:
            self._unload(item)
            raise

    def _unload(self, item: ItemT) -> None:
        """Forget the item's package (after a failure while loading it)."""
        unload_package(self._module_name(item))
        self._modules.pop(item.id, None)

    def _module_name(self, item: ItemT) -> str:
        return f"{self._token}_{item.id}"

    async def _stop_all(self, live: tuple[str, ...], stopped: str, hook_name: str,
                        argument: Callable[[ItemT], Any]) -> None:
        """In reverse order, mark each live item `stopped` and run its `hook_name` hook; a hook
        that raises is recorded and logged, and the others still run."""
        for item in reversed(list(self._items.values())):
            if item.status not in live:
                continue
            item.status = stopped
            hook = getattr(self._modules.get(item.id), hook_name, None)
            if hook is None:
                continue
            try:
                await call_hook(hook, argument(item))
            except Exception as exc:
                item.error = describe_error(exc)
                self.logger.exception("%s %s (%s): %s raised; continuing with the others",
                                      self.label, item.id, item.manifest_path, hook_name)
        unload_namespace(self._token)

    def _read(self, folder: Path, manifest_path: Path) -> ItemT:
        raise NotImplementedError

    def _unreadable(self, folder: Path, manifest_path: Path, exc: Exception) -> None:
        raise exc

    def _duplicate(self, item: ItemT, first: ItemT) -> None:
        raise NotImplementedError

    def _fail(self, item: ItemT, exc: Exception) -> None:
        raise NotImplementedError
