"""Throwaway plugin folders: a copy of a bundled discovery folder, plus plugins written in it."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path
from typing import Any

from pixsim7_testing.inventory import PACKAGE_DIR


def toml_value(value: Any) -> str:
    """A Python value as a TOML literal (the few types manifests use)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML literal for {value!r}")


def write_plugin(
    root: Path,
    folder: str,
    code: str = "",
    *,
    manifest_text: str | None = None,
    **fields: Any,
) -> Path:
    """Create `root/folder` with a manifest (from `fields` unless given) and `__init__.py`.

    The manifest built from `fields` starts with id = folder, name = folder.title(),
    version = "1.0.0" and kind = "feature"; `fields` override or add to these. `code` is
    dedented.
    """
    path = root / folder
    path.mkdir(parents=True, exist_ok=True)
    if manifest_text is None:
        values = {"id": folder, "name": folder.title(), "version": "1.0.0", "kind": "feature"}
        values.update(fields)
        manifest_text = "".join(f"{k} = {toml_value(v)}\n" for k, v in values.items())
    (path / "manifest.toml").write_text(manifest_text, encoding="utf-8")
    (path / "__init__.py").write_text(textwrap.dedent(code), encoding="utf-8")
    return path


def copy_bundled(folder: str, target: Path) -> Path:
    """A fresh copy of the package's bundled `folder` ("plugins", "routes", "middleware",
    "domain_models") at `target`, without byte-code caches."""
    shutil.copytree(PACKAGE_DIR / folder, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def bundled_with_plugin(target: Path, bundled: str, folder: str, code: str = "", *,
                        manifest_text: str | None = None, **fields: Any) -> Path:
    """`copy_bundled(bundled, target)` plus one more plugin written by `write_plugin`."""
    copy_bundled(bundled, target)
    write_plugin(target, folder, code, manifest_text=manifest_text, **fields)
    return target
