"""One loader for manifest folders: feature and route plugins, middleware, domain packages.

A manifest folder holds one subfolder per item, each with a `manifest.toml`. This module finds
those subfolders, reads the TOML, validates it with a pydantic model, orders the items by their
dependencies and reports cycles; every problem is a `ManifestError` naming the file or folder
at fault and the fault.
"""

from __future__ import annotations

import functools
import heapq
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

MANIFEST_FILENAME = "manifest.toml"

ModelT = TypeVar("ModelT", bound=BaseModel)


class ManifestError(ValueError):
    """A manifest folder, file or dependency is wrong; the message starts with its path."""

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


class ManifestFolderError(ManifestError):
    """The folder a setting points at is missing or is not a folder; names the setting."""

    def __init__(self, path: Path, setting: str, fault: str) -> None:
        env = setting.upper()
        ValueError.__init__(self, f"{env}={path} {fault}; point {env} at a folder")
        self.path = path


def check_folder(directory: Path, setting: str) -> Path:
    """`directory` if it is a folder, else a ManifestFolderError naming `setting`."""
    directory = Path(directory)
    if not directory.is_dir():
        fault = "is not a folder" if directory.exists() else "does not exist"
        raise ManifestFolderError(directory, setting, fault)
    return directory


def manifest_folders(directory: Path, setting: str, *,
                     markers: tuple[str, ...] = (MANIFEST_FILENAME,)) -> list[Path]:
    """The subfolders of `directory` holding one of `markers`, by name; `setting` names the
    environment variable to fix when `directory` is not a folder."""
    directory = check_folder(directory, setting)
    return [
        folder for folder in sorted(directory.iterdir(), key=lambda p: p.name)
        if folder.is_dir() and not folder.name.startswith(("_", "."))
        and any((folder / marker).exists() for marker in markers)
    ]


def read_toml(path: Path, error_cls: type[ManifestError] = ManifestError) -> dict[str, Any]:
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


def validate_document(path: Path, data: dict[str, Any], model: type[ModelT],
                      error_cls: type[ManifestError] = ManifestError) -> ModelT:
    """Validate `data` against `model`, naming each offending field in the error."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = ".".join(str(part) for part in err["loc"])
            if not field:  # a check across fields: its message names them
                problems.append(err["msg"].removeprefix("Value error, "))
            elif err["type"] == "missing":
                problems.append(f"field {field!r} is required but missing")
            elif err["type"] == "extra_forbidden":
                problems.append(f"field {field!r} is not a known manifest field")
            else:
                problems.append(f"field {field!r}: {err['msg']}")
        raise error_cls(path, "; ".join(problems)) from None


def load_manifest(path: Path, model: type[ModelT],
                  error_cls: type[ManifestError] = ManifestError) -> ModelT:
    """Read and validate one manifest file.

    A frozen model's result is reused while the file keeps its mtime and size: every app may
    share it, and each new app skips the TOML parse and the validation.
    """
    if model.model_config.get("frozen"):
        try:
            stat = path.stat()
        except OSError:
            pass  # read_toml names the problem
        else:
            return _load_cached(path, stat.st_mtime_ns, stat.st_size, model, error_cls)
    return validate_document(path, read_toml(path, error_cls), model, error_cls)


@functools.lru_cache(maxsize=512)
def _load_cached(path: Path, mtime_ns: int, size: int, model: type[ModelT],
                 error_cls: type[ManifestError]) -> ModelT:
    return validate_document(path, read_toml(path, error_cls), model, error_cls)


def dependency_order(
    nodes: Sequence[str], dependencies: Mapping[str, Iterable[str]]
) -> tuple[list[str], list[str]]:
    """(order, blocked): Kahn's algorithm where, among ready nodes, the one listed first goes
    first, so the order is the same on every run. Dependencies on unknown nodes are ignored.
    `blocked` lists, in input order, the nodes that wait on a cycle (or are on one)."""
    position = {node: index for index, node in enumerate(nodes)}
    waiting: dict[str, int] = {}
    dependents: dict[str, list[str]] = {node: [] for node in nodes}
    for node in nodes:
        known = {dep for dep in dependencies.get(node, ()) if dep in position}
        waiting[node] = len(known)
        for dep in known:
            dependents[dep].append(node)
    ready = [position[node] for node in nodes if waiting[node] == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        node = nodes[heapq.heappop(ready)]
        order.append(node)
        for dependent in dependents[node]:
            waiting[dependent] -= 1
            if waiting[dependent] == 0:
                heapq.heappush(ready, position[dependent])
    done = set(order)
    return order, [node for node in nodes if node not in done]


def dependency_cycles(
    nodes: Sequence[str], dependencies: Mapping[str, Iterable[str]]
) -> list[list[str]]:
    """Groups of nodes that depend on each other (strongly connected, or one node depending on
    itself), each in input order, the groups ordered by their first node."""
    position = {node: i for i, node in enumerate(nodes)}
    edges = {node: [d for d in dependencies.get(node, ()) if d in position] for node in nodes}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    for root in nodes:
        if root in index:
            continue
        # Iterative Tarjan: the graphs are small, but recursion limits are not worth risking.
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            if i < len(edges[node]):
                work.append((node, i + 1))
                nxt = edges[node][i]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1 or node in edges[node]:
                    groups.append(sorted(group, key=position.__getitem__))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return sorted(groups, key=lambda g: position[g[0]])


def cycle_path(group: Sequence[str], dependencies: Mapping[str, Iterable[str]]) -> list[str]:
    """One cycle through `group` (from `dependency_cycles`) as a path back to its start."""
    members = set(group)
    path, seen, current = [group[0]], {group[0]: 0}, group[0]
    while True:
        # Inside a strongly connected group every member depends on another member.
        current = next(d for d in dependencies.get(current, ()) if d in members)
        if current in seen:
            return path[seen[current]:] + [current]
        seen[current] = len(path)
        path.append(current)
