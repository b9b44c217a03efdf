"""Domain package discovery, manifest validation and dependency ordering."""

from __future__ import annotations

import json
import shutil
import textwrap
import uuid
from pathlib import Path

import pytest
from fastapi import FastAPI

from pixsim7.backend.main.infrastructure.discovery.domain_registry import (
    DomainModelRegistry,
    DomainRegistryError,
    domain_registry,
    init_domain_registry,
)
from pixsim7.backend.main.infrastructure.discovery.manifests import ManifestFolderError
from pixsim7.backend.main.shared import app_context
from pixsim7.backend.main.shared.config import PACKAGE_DIR

BUNDLED_DIR = PACKAGE_DIR / "domain_models"


def unique(prefix: str) -> str:
    # Package modules and tables live for the whole process, so every test uses fresh names.
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def write_package(
    root: Path,
    folder: str,
    *,
    manifest: str,
    models: str | None = "",
) -> Path:
    path = root / folder
    path.mkdir(parents=True)
    (path / "manifest.toml").write_text(textwrap.dedent(manifest))
    if models is not None:
        (path / "models.py").write_text(textwrap.dedent(models))
    return path


def model_source(*classes: tuple[str, str]) -> str:
    """models.py text defining (class name, table name) models on the shared Base."""
    body = [
        "from sqlalchemy.orm import Mapped, mapped_column",
        "from pixsim7.backend.main.infrastructure.adapters.database.base import Base",
    ]
    for class_name, table in classes:
        body += [
            f"class {class_name}(Base):",
            f"    __tablename__ = {table!r}",
            "    id: Mapped[int] = mapped_column(primary_key=True)",
        ]
    return "\n".join(body) + "\n"


def simple_package(root: Path, folder: str, name: str, depends_on: list[str]) -> str:
    class_name = f"M{name}"
    write_package(
        root,
        folder,
        manifest=f"name = {name!r}\ndepends_on = {json.dumps(depends_on)}\n"
        f"models = [{class_name!r}]\n",
        models=model_source((class_name, f"t_{name}")),
    )
    return class_name


def test_bundled_packages_load_in_dependency_order() -> None:
    registry = init_domain_registry(BUNDLED_DIR)

    assert list(registry.packages) == ["core", "game"]
    assert registry.packages["game"].depends_on == ("core",)
    assert registry.summary() == {
        "packages": ["core", "game"],
        "models": ["User", "Asset", "GenerationPreset", "World", "GameSession"],
        "tables": ["users", "assets", "generation_presets", "worlds", "game_sessions"],
    }
    assert json.loads(json.dumps(registry.summary())) == registry.summary()
    preset = registry.model("GenerationPreset")
    assert preset.__table__.c["name"].unique
    assert {fk.target_fullname for fk in registry.model("GameSession").__table__.foreign_keys} == {
        "users.id",
        "worlds.id",
    }


def test_each_call_builds_a_new_registry_over_the_same_classes() -> None:
    first = init_domain_registry(BUNDLED_DIR)
    second = init_domain_registry(BUNDLED_DIR)

    assert first is not second
    assert first.models == second.models
    assert [t.name for t in first.tables] == first.table_names()


def test_bundled_models_are_also_importable_by_dotted_name() -> None:
    registry = init_domain_registry(BUNDLED_DIR)
    from pixsim7.backend.main.domain_models.core.models import User

    assert User is registry.model("User")


def test_unknown_model_names_the_known_ones() -> None:
    registry = init_domain_registry(BUNDLED_DIR)
    with pytest.raises(KeyError, match="no domain model named 'Nope'.*GameSession"):
        registry.model("Nope")


def test_forwarder_reads_the_running_app() -> None:
    app = FastAPI()
    app.state.domain_registry = init_domain_registry(BUNDLED_DIR)
    app_context.activate(app)
    try:
        with pytest.warns(DeprecationWarning, match=r"read app\.state\.domain_registry"):
            assert domain_registry.table_names()[0] == "users"
    finally:
        app_context.deactivate(app)


def test_missing_directory(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(ManifestFolderError, match="does not exist.*DOMAIN_MODELS_DIR") as info:
        init_domain_registry(missing)
    assert info.value.path == missing


def test_file_instead_of_directory(tmp_path: Path) -> None:
    file = tmp_path / "models.toml"
    file.write_text("")
    with pytest.raises(ManifestFolderError, match="is not a folder.*DOMAIN_MODELS_DIR"):
        init_domain_registry(file)


def test_empty_directory_gives_empty_registry(tmp_path: Path) -> None:
    registry = init_domain_registry(tmp_path)
    assert isinstance(registry, DomainModelRegistry)
    assert registry.summary() == {"packages": [], "models": [], "tables": []}


def test_folders_without_manifest_are_ignored(tmp_path: Path) -> None:
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "notes").mkdir()
    (tmp_path / "README.md").write_text("not a package")
    name = unique("plain")
    simple_package(tmp_path, "plain", name, [])
    assert list(init_domain_registry(tmp_path).packages) == [name]


@pytest.mark.parametrize(
    ("manifest", "problem"),
    [
        ('name = "x\nmodels = []\n', "invalid TOML"),
        ("models = []\n", "field 'name' is required but missing"),
        ("name = 3\nmodels = []\n", "field 'name': Input should be a valid string"),
        ('name = "has-dash"\nmodels = []\n', "field 'name': String should match pattern"),
        ('name = "n"\n', "field 'models' is required but missing"),
        ('name = "n"\nmodels = "User"\n', "field 'models': Input should be a valid list"),
        ('name = "n"\nmodels = [1]\n', "field 'models.0': Input should be a valid string"),
        ('name = "n"\nmodels = ["A", "A"]\n', "lists A more than once"),
        ('name = "n"\nmodels = ["not-a-class"]\n', "'not-a-class' is not a class name"),
        ('name = "n"\nmodels = []\ndepends_on = "core"\n',
         "field 'depends_on': Input should be a valid list"),
        ('name = "n"\nmodels = []\ndescription = 5\n',
         "field 'description': Input should be a valid string"),
        ('name = "n"\nmodels = []\ndepend_on = ["core"]\n',
         "field 'depend_on' is not a known manifest field"),
    ],
)
def test_invalid_manifest_names_the_file(tmp_path: Path, manifest: str, problem: str) -> None:
    write_package(tmp_path, "broken", manifest=manifest)
    with pytest.raises(DomainRegistryError, match=problem) as info:
        init_domain_registry(tmp_path)
    assert str(tmp_path / "broken" / "manifest.toml") in str(info.value)


def test_unknown_dependency(tmp_path: Path) -> None:
    name = unique("needy")
    simple_package(tmp_path, "needy", name, ["ghost"])
    with pytest.raises(DomainRegistryError, match="unknown package 'ghost'") as info:
        init_domain_registry(tmp_path)
    assert str(tmp_path / "needy" / "manifest.toml") in str(info.value)


def test_dependency_cycle(tmp_path: Path) -> None:
    a, b, c = unique("a"), unique("b"), unique("c")
    write_package(tmp_path, "a", manifest=f'name = "{a}"\ndepends_on = ["{b}"]\nmodels = []\n')
    write_package(tmp_path, "b", manifest=f'name = "{b}"\ndepends_on = ["{a}"]\nmodels = []\n')
    write_package(tmp_path, "c", manifest=f'name = "{c}"\nmodels = []\n')
    with pytest.raises(DomainRegistryError, match="dependency cycle") as info:
        init_domain_registry(tmp_path)
    message = str(info.value)
    assert f"{a} -> {b} -> {a}" in message
    assert str(tmp_path / "a" / "manifest.toml") in message
    assert c not in message


def test_self_dependency_is_a_cycle(tmp_path: Path) -> None:
    name = unique("ouroboros")
    write_package(tmp_path, "o", manifest=f'name = "{name}"\ndepends_on = ["{name}"]\nmodels=[]\n')
    with pytest.raises(DomainRegistryError, match=f"{name} -> {name}"):
        init_domain_registry(tmp_path)


def test_duplicate_package_name(tmp_path: Path) -> None:
    name = unique("twin")
    write_package(tmp_path, "one", manifest=f'name = "{name}"\nmodels = []\n')
    write_package(tmp_path, "two", manifest=f'name = "{name}"\nmodels = []\n')
    with pytest.raises(DomainRegistryError, match="already used by") as info:
        init_domain_registry(tmp_path)
    assert str(tmp_path / "one" / "manifest.toml") in str(info.value)
    assert str(tmp_path / "two" / "manifest.toml") in str(info.value)


def test_listed_model_missing_from_models_py(tmp_path: Path) -> None:
    name = unique("liar")
    write_package(
        tmp_path,
        "liar",
        manifest=f'name = "{name}"\nmodels = ["Ghost"]\n',
        models="VALUE = 1\n",
    )
    with pytest.raises(DomainRegistryError, match="lists model 'Ghost'.*defines no such class"):
        init_domain_registry(tmp_path)


def test_listed_name_that_is_not_a_model(tmp_path: Path) -> None:
    name = unique("plainclass")
    write_package(
        tmp_path,
        "p",
        manifest=f'name = "{name}"\nmodels = ["Thing"]\n',
        models="class Thing:\n    pass\n",
    )
    with pytest.raises(DomainRegistryError, match="is not a model on the shared Base"):
        init_domain_registry(tmp_path)


def test_missing_models_py(tmp_path: Path) -> None:
    name = unique("hollow")
    write_package(tmp_path, "hollow", manifest=f'name = "{name}"\nmodels = []\n', models=None)
    with pytest.raises(DomainRegistryError, match="no models.py") as info:
        init_domain_registry(tmp_path)
    assert str(tmp_path / "hollow") in str(info.value)


def test_models_py_that_fails_to_import(tmp_path: Path) -> None:
    name = unique("crashy")
    write_package(
        tmp_path,
        "crashy",
        manifest=f'name = "{name}"\nmodels = []\n',
        models="raise RuntimeError('boom')\n",
    )
    with pytest.raises(DomainRegistryError, match="importing it failed with RuntimeError: boom"):
        init_domain_registry(tmp_path)
    # A failed import leaves nothing behind, so the error repeats instead of vanishing.
    with pytest.raises(DomainRegistryError, match="RuntimeError: boom"):
        init_domain_registry(tmp_path)


def test_order_follows_dependencies_then_folder_names(tmp_path: Path) -> None:
    base, mid, top, loose = unique("base"), unique("mid"), unique("top"), unique("loose")
    # Folder names put the dependants first, so only dependency ordering can fix the order.
    simple_package(tmp_path, "a_top", top, [mid, base])
    simple_package(tmp_path, "b_mid", mid, [base])
    simple_package(tmp_path, "c_loose", loose, [])
    simple_package(tmp_path, "d_base", base, [])

    registry = init_domain_registry(tmp_path)

    assert list(registry.packages) == [loose, base, mid, top]
    assert registry.summary()["tables"] == [f"t_{n}" for n in (loose, base, mid, top)]
    assert registry.model(f"M{mid}").__name__ == f"M{mid}"
    again = init_domain_registry(tmp_path)
    assert again.models == registry.models


def test_same_package_name_from_another_folder_is_refused(tmp_path: Path) -> None:
    name = unique("shared")
    simple_package(tmp_path / "first", "pkg", name, [])
    init_domain_registry(tmp_path / "first")
    shutil.copytree(tmp_path / "first", tmp_path / "second")

    with pytest.raises(DomainRegistryError, match="already loaded in this process from") as info:
        init_domain_registry(tmp_path / "second")
    assert str(tmp_path / "first" / "pkg" / "models.py") in str(info.value)


def test_model_name_provided_by_two_packages(tmp_path: Path) -> None:
    first, second = unique("first"), unique("second")
    cls = unique("Dup")
    write_package(
        tmp_path,
        "first",
        manifest=f'name = "{first}"\nmodels = ["{cls}"]\n',
        models=model_source((cls, f"t_{first}")),
    )
    write_package(
        tmp_path,
        "second",
        manifest=f'name = "{second}"\ndepends_on = ["{first}"]\nmodels = ["{cls}"]\n',
        models=f"from pixsim7_domain_models.{first} import {cls}\n",
    )
    with pytest.raises(DomainRegistryError, match="is already provided by package"):
        init_domain_registry(tmp_path)
