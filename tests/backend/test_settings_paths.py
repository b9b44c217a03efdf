"""Discovery directories: defaults from the installed package, overrides, logging, packaging."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from pixsim7.backend.main.shared.config import DISCOVERY_DIRS, PACKAGE_DIR, Settings

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_defaults_are_todays_layout_from_the_repo_root(monkeypatch) -> None:
    monkeypatch.chdir(REPO_ROOT)
    for name in DISCOVERY_DIRS:
        monkeypatch.delenv(name.upper(), raising=False)
    settings = Settings(_env_file=None)
    assert {name: path.relative_to(REPO_ROOT).as_posix()
            for name, path in settings.discovery_dirs().items()} == {
        "domain_models_dir": "pixsim7/backend/main/domain_models",
        "feature_plugins_dir": "pixsim7/backend/main/plugins",
        "route_plugins_dir": "pixsim7/backend/main/routes",
        "middleware_dir": "pixsim7/backend/main/middleware",
    }


def test_defaults_do_not_depend_on_the_working_directory(tmp_path, monkeypatch) -> None:
    for name in DISCOVERY_DIRS:
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.chdir(tmp_path)
    elsewhere = Settings(_env_file=None).discovery_dirs()
    assert all(path.is_dir() and path.parent == PACKAGE_DIR for path in elsewhere.values())


def test_relative_overrides_resolve_against_the_working_directory(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FEATURE_PLUGINS_DIR", "deploy/plugins")
    assert Settings(_env_file=None).feature_plugins_dir == tmp_path / "deploy" / "plugins"


def test_a_dotenv_file_in_the_working_directory_counts_and_the_environment_wins_over_it(
        tmp_path, monkeypatch) -> None:
    # The .env source is left out only when it would give nothing; a file that has values
    # still sets what the environment does not.
    monkeypatch.chdir(tmp_path)
    for name in ("APP_NAME", "JOBS_MAX_QUEUED", "REDIS_KEY_PREFIX"):
        monkeypatch.delenv(name, raising=False)
    assert Settings().app_name == "PixSim7"  # no .env here
    (tmp_path / ".env").write_text("APP_NAME=from-dotenv\nJOBS_MAX_QUEUED=7\n")
    monkeypatch.setenv("JOBS_MAX_QUEUED", "9")
    settings = Settings()
    assert (settings.app_name, settings.jobs_max_queued) == ("from-dotenv", 9)
    assert Settings(_env_file=None).app_name == "PixSim7"
    (tmp_path / ".env").write_text("")
    assert Settings().app_name == "PixSim7"


@pytest.mark.integration
async def test_effective_paths_are_logged_at_startup(app_factory, make_settings, tmp_path,
                                                     caplog) -> None:
    caplog.set_level(logging.INFO, logger="pixsim7.startup")
    running = await app_factory(make_settings())
    assert running.started, running.startup_error
    logged = {r.getMessage() for r in caplog.records if r.name == "pixsim7.startup"}
    for name in DISCOVERY_DIRS:
        assert f"{name.upper()} = {getattr(running.settings, name)}" in logged


def test_the_wheels_carry_every_manifest_and_claim_no_generic_name(tmp_path) -> None:
    # An installed package must find its plugins: their manifest.toml files ship in the wheel.
    # The kit is a wheel of its own, `pixsim7_testing`, registered with pytest; neither wheel
    # installs a top-level `testing`. Built from a copy, so the working tree gets no build/ or
    # egg-info folders.
    source = tmp_path / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    for name in ("pixsim7", "testing"):
        shutil.copytree(REPO_ROOT / name, source / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO_ROOT / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
         "-w", str(tmp_path / "dist"), str(source), str(source / "testing")],
        check=True, capture_output=True, timeout=300,
    )
    (wheel,) = (tmp_path / "dist").glob("pixsim7-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {p.relative_to(REPO_ROOT).as_posix() for p in PACKAGE_DIR.rglob("manifest.toml")}
    assert expected and expected <= names
    (kit,) = (tmp_path / "dist").glob("pixsim7_testing-*.whl")
    kit_names = set(zipfile.ZipFile(kit).namelist())
    # Every module of the kit's folder, subpackages included, is in its wheel.
    kit_dir = REPO_ROOT / "testing"
    modules = {"pixsim7_testing/" + p.relative_to(kit_dir).as_posix()
               for p in kit_dir.rglob("*.py") if "build" not in p.relative_to(kit_dir).parts}
    assert modules and modules <= kit_names, sorted(modules - kit_names)
    tops = {name.split("/")[0] for name in names | kit_names}
    assert "testing" not in tops and not any(top.endswith(".toml") for top in tops), tops
    (entry_points,) = [n for n in kit_names if n.endswith(".dist-info/entry_points.txt")]
    text = zipfile.ZipFile(kit).read(entry_points).decode()
    assert "[pytest11]\npixsim7 = pixsim7_testing.plugin" in text, text
