"""Manifest parsing: every problem names the manifest file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest
from pixsim7_testing.plugins import write_plugin

from pixsim7.backend.main.infrastructure.discovery.plugins.manifest import (
    PluginManifestError,
    load_manifest,
)


def manifest_at(tmp_path: Path, text: str) -> Path:
    return write_plugin(tmp_path, "demo", manifest_text=text) / "manifest.toml"


def test_valid_manifest_with_defaults(tmp_path: Path) -> None:
    path = manifest_at(tmp_path, 'id = "demo"\nname = "Demo"\nversion = "1.2.0"\nkind = "route"\n')
    manifest = load_manifest(path, "route")
    assert manifest.id == "demo"
    assert manifest.dependencies == ()
    assert manifest.required is False
    assert manifest.enabled is True
    assert manifest.prefix is None
    assert manifest.description is None


def test_syntax_error_names_path_and_line(tmp_path: Path) -> None:
    path = manifest_at(tmp_path, 'id = "demo"\nname = "Demo\nversion = "1"\n')
    with pytest.raises(PluginManifestError) as info:
        load_manifest(path)
    message = str(info.value)
    assert str(path) in message
    assert "invalid TOML" in message
    assert "line 2" in message


def test_missing_field_is_named(tmp_path: Path) -> None:
    path = manifest_at(tmp_path, 'id = "demo"\nname = "Demo"\nkind = "feature"\n')
    with pytest.raises(PluginManifestError) as info:
        load_manifest(path)
    assert str(path) in str(info.value)
    assert "'version' is required" in str(info.value)


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ('required = "yes"', "required"),
        ('dependencies = "relationships"', "dependencies"),
        ("version = 2", "version"),
        ('kind = "widget"', "kind"),
    ],
)
def test_wrong_type_is_named(tmp_path: Path, line: str, field: str) -> None:
    base = {"id": '"demo"', "name": '"Demo"', "version": '"1.0"', "kind": '"feature"'}
    key = line.split(" = ")[0]
    base[key] = line.split(" = ", 1)[1]
    text = "".join(f"{k} = {v}\n" for k, v in base.items())
    path = manifest_at(tmp_path, text)
    with pytest.raises(PluginManifestError) as info:
        load_manifest(path)
    assert str(path) in str(info.value)
    assert f"field {field!r}" in str(info.value)


def test_bad_id_unknown_field_and_prefix(tmp_path: Path) -> None:
    path = manifest_at(
        tmp_path,
        'id = "Demo-1"\nname = "D"\nversion = "1"\nkind = "feature"\nprefx = "/x"\n'
        'prefix = "nope/"\n',
    )
    with pytest.raises(PluginManifestError) as info:
        load_manifest(path)
    message = str(info.value)
    assert "field 'id'" in message
    assert "field 'prefx' is not a known manifest field" in message
    assert "field 'prefix'" in message


def test_kind_must_match_the_manager(tmp_path: Path) -> None:
    path = manifest_at(tmp_path, 'id = "demo"\nname = "Demo"\nversion = "1"\nkind = "feature"\n')
    with pytest.raises(PluginManifestError) as info:
        load_manifest(path, "route")
    assert str(path) in str(info.value)
    assert "field 'kind'" in str(info.value)


def test_missing_manifest_file(tmp_path: Path) -> None:
    path = tmp_path / "nothing" / "manifest.toml"
    with pytest.raises(PluginManifestError) as info:
        load_manifest(path)
    assert str(path) in str(info.value)
