"""A stable, JSON-able picture of `app.state`: each key, its type, a summary of its content.

Volatile values (ports, temp paths, durations, ids, timestamps, secrets) are replaced by
placeholders so two runs on two machines give byte-identical output.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pixsim7_testing.ownership import database_prefix
from pydantic import BaseModel

import pixsim7.backend.main

_PLACEHOLDER_BY_KEY = [
    (re.compile(r"(^|_)(secret|token|password)(_|$)|^secret_key$"), "<secret>"),
    (re.compile(r"(^|_)(duration|elapsed|seconds|ms)(_|$)|_ms$|_s$"), "<duration>"),
    (re.compile(r"(^|_)(timestamp|time)(_|$)|_at$|^started$|^finished$"), "<timestamp>"),
    (re.compile(r"(^|_)port$"), "<port>"),
    (re.compile(r"(^|_)pid$"), "<pid>"),
]
_VALUE_PATTERNS = [
    # A URL's password (masked or not) depends on the backend: snapshots show the user only.
    (re.compile(r"(://[^/:@\s]+):[^/@\s]*@"), r"\1@"),
    (re.compile(r"://:[^/@\s]*@"), "://"),
    (re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}:\d+\b"), "<host>:<port>"),
    (re.compile(r"\blocalhost:\d+\b"), "<host>:<port>"),
    (re.compile(r"@[A-Za-z0-9.\-]+:\d+/"), "@<host>:<port>/"),
    (re.compile(rf"{database_prefix()}t_[A-Za-z0-9_]+"), "<test-db>"),
    (re.compile(r"pixsim7:t:[A-Za-z0-9_]+:"), "<test-prefix>"),
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b"), "<uuid>"),
    (re.compile(r"\b[0-9a-fA-F]{16,}\b"), "<id>"),
    (re.compile(r"0x[0-9a-f]{6,}"), "<addr>"),
]


def type_name(value: Any) -> str:
    kind = type(value)
    module = kind.__module__
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"


def summarize(value: Any, depth: int = 0) -> Any:
    """A JSON-able summary: `summary()` when the object has one, its data when it is data."""
    if depth > 8:
        return "<deep>"
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    summary = getattr(value, "summary", None)
    if callable(summary) and not isinstance(value, type):
        return summarize(summary(), depth + 1)
    if isinstance(value, BaseModel):
        return summarize(value.model_dump(mode="json"), depth + 1)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: summarize(getattr(value, f.name), depth + 1)
                for f in dataclasses.fields(value) if not f.name.startswith("_")}
    if isinstance(value, Mapping):
        return {str(k): summarize(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [summarize(v, depth + 1) for v in value]
    if isinstance(value, set | frozenset):
        return sorted((summarize(v, depth + 1) for v in value), key=repr)
    if isinstance(value, type):
        return f"{value.__module__}.{value.__qualname__}"
    return None  # an opaque object (client, engine): its type says enough


class Normalizer:
    """Replaces volatile parts of a summary with placeholders."""

    def __init__(self, paths: Mapping[str | Path, str] | None = None) -> None:
        known = {str(Path(tempfile.gettempdir()).resolve()): "<tmp>"}
        for path, label in (paths or {}).items():
            known[str(Path(path).resolve())] = label
        # Longest first, so a path inside another is replaced by its own label.
        self._paths = sorted(known.items(), key=lambda item: len(item[0]), reverse=True)

    def text(self, value: str) -> str:
        for path, label in self._paths:
            value = value.replace(path, label)
        for pattern, placeholder in _VALUE_PATTERNS:
            value = pattern.sub(placeholder, value)
        return value

    def __call__(self, value: Any, key: str = "") -> Any:
        for pattern, placeholder in _PLACEHOLDER_BY_KEY:
            if key and pattern.search(key.lower()) and value is not None and not isinstance(
                    value, bool | Mapping | list):
                return placeholder
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {self.text(str(k)): self(v, str(k)) for k, v in sorted(value.items())}
        if isinstance(value, list):
            return [self(v, key) for v in value]
        return value


def state_inventory(state: Any, normalizer: Normalizer | None = None) -> dict[str, Any]:
    """Every key of a Starlette `State` (or mapping): its type and normalized summary.

    A State is read through its public mapping protocol (iteration and `state[key]`).
    """
    normalize = normalizer or Normalizer()
    values = {key: state[key] for key in state}
    return {
        key: {"type": type_name(value), "summary": normalize(summarize(value), key)}
        for key, value in sorted(values.items())
    }


def dumps(data: Any) -> str:
    """The canonical JSON text of an inventory (sorted keys, two-space indent)."""
    return json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False)


# The installed backend package (a checkout's, or site-packages'), and the folder holding it.
PACKAGE_DIR = Path(pixsim7.backend.main.__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parents[2]


def normalizer(tmp_path: Path) -> Normalizer:
    """The kit's Normalizer for a test: its tmp_path, the backend package and the folder
    holding it written as placeholders."""
    return Normalizer({tmp_path: "<tmp_path>", PACKAGE_DIR: "<package>", REPO_ROOT: "<repo>"})
