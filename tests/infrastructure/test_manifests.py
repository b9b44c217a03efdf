"""The one loader for manifest folders: discovery, reading, validation, ordering, cycles."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict

from pixsim7.backend.main.infrastructure.discovery.domain_registry import (
    DomainRegistryError,
    init_domain_registry,
)
from pixsim7.backend.main.infrastructure.discovery.manifests import (
    ManifestError,
    ManifestFolderError,
    cycle_path,
    dependency_cycles,
    dependency_order,
    load_manifest,
    manifest_folders,
)
from pixsim7.backend.main.infrastructure.discovery.middleware.manager import (
    MiddlewareManager,
    MiddlewareManifestError,
)
from pixsim7.backend.main.infrastructure.discovery.plugins.manager import PluginManager
from pixsim7.backend.main.infrastructure.discovery.plugins.manifest import PluginManifestError


class Thing(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    name: str
    size: int = 1


def test_manifest_folders_lists_marked_subfolders_by_name(tmp_path: Path) -> None:
    for name in ("b", "a", "_private", ".hidden", "plain"):
        (tmp_path / name).mkdir()
    for name in ("b", "a", "_private", ".hidden"):
        (tmp_path / name / "manifest.toml").write_text('name = "x"\n')
    (tmp_path / "plain" / "__init__.py").write_text("")
    (tmp_path / "file.toml").write_text("")
    assert manifest_folders(tmp_path, "x_dir") == [tmp_path / "a", tmp_path / "b"]
    with_code = manifest_folders(tmp_path, "x_dir", markers=("manifest.toml", "__init__.py"))
    assert with_code == [tmp_path / "a", tmp_path / "b", tmp_path / "plain"]


@pytest.mark.parametrize(("make", "fault"), [
    (lambda path: None, "does not exist"),
    (lambda path: path.write_text("a file"), "is not a folder"),
])
def test_a_folder_that_is_not_there_names_the_path_and_the_setting(tmp_path: Path, make,
                                                                   fault: str) -> None:
    target = tmp_path / "items"
    make(target)
    with pytest.raises(ManifestFolderError) as caught:
        manifest_folders(target, "middleware_dir")
    assert caught.value.path == target
    assert str(caught.value) == f"MIDDLEWARE_DIR={target} {fault}; point MIDDLEWARE_DIR at a folder"


def test_each_kind_of_folder_reports_a_missing_folder_the_same_way(tmp_path: Path) -> None:
    missing = tmp_path / "absent"
    loaders = {
        "DOMAIN_MODELS_DIR": lambda: init_domain_registry(missing),
        "FEATURE_PLUGINS_DIR": lambda: PluginManager("feature", missing,
                                                     fail_fast=True).discover(),
        "MIDDLEWARE_DIR": lambda: MiddlewareManager(missing).discover(),
    }
    for setting, load in loaders.items():
        with pytest.raises(ManifestFolderError, match=setting) as caught:
            load()
        assert caught.value.path == missing


def test_load_manifest_names_the_file_and_each_bad_field(tmp_path: Path) -> None:
    path = tmp_path / "manifest.toml"
    path.write_text('size = "big"\ncolour = "red"\n')
    with pytest.raises(ManifestError) as caught:
        load_manifest(path, Thing)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert "field 'name' is required but missing" in message
    assert "field 'size': Input should be a valid integer" in message
    assert "field 'colour' is not a known manifest field" in message


def test_load_manifest_reports_the_toml_line(tmp_path: Path) -> None:
    path = tmp_path / "manifest.toml"
    path.write_text('name = "x"\nsize = \n')
    with pytest.raises(ManifestError, match="invalid TOML: .*line 2"):
        load_manifest(path, Thing)


def test_every_manifest_error_is_one_family() -> None:
    for error in (PluginManifestError, MiddlewareManifestError, DomainRegistryError,
                  ManifestFolderError):
        assert issubclass(error, ManifestError)


def test_dependency_order_is_stable_and_lists_what_a_cycle_blocks() -> None:
    nodes = ["web", "db", "cache", "a", "b", "needs_a"]
    deps = {"web": ["db", "cache"], "a": ["b"], "b": ["a"], "needs_a": ["a"], "db": ["ghost"]}
    assert dependency_order(nodes, deps) == (["db", "cache", "web"], ["a", "b", "needs_a"])


def test_dependency_cycles_reports_each_group_and_a_path_through_it() -> None:
    nodes = ["a", "b", "c", "solo", "x", "y"]
    deps = {"a": ["b"], "b": ["c"], "c": ["a"], "solo": ["solo"], "x": ["a"], "y": []}
    cycles = dependency_cycles(nodes, deps)
    assert cycles == [["a", "b", "c"], ["solo"]]
    assert cycle_path(cycles[0], deps) == ["a", "b", "c", "a"]
    assert cycle_path(cycles[1], deps) == ["solo", "solo"]
