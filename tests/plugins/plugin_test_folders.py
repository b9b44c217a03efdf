"""Builders for throwaway plugin folders used by the plugin tests."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any


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
    """Create `root/folder` with a manifest (from `fields` unless given) and `__init__.py`."""
    path = root / folder
    path.mkdir(parents=True, exist_ok=True)
    if manifest_text is None:
        values = {"id": folder, "name": folder.title(), "version": "1.0.0", "kind": "feature"}
        values.update(fields)
        manifest_text = "".join(f"{k} = {toml_value(v)}\n" for k, v in values.items())
    (path / "manifest.toml").write_text(manifest_text, encoding="utf-8")
    (path / "__init__.py").write_text(textwrap.dedent(code), encoding="utf-8")
    return path
