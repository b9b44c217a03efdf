"""Every app owns its registries and managers on app.state; legacy names only forward."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pixsim7.backend.main.api import schemas
from pixsim7.backend.main.infrastructure.discovery import domain_registry as domain_registry_module
from pixsim7.backend.main.infrastructure.discovery.middleware import manager as middleware_module
from pixsim7.backend.main.infrastructure.discovery.plugins import (
    dependencies as dependencies_module,
)
from pixsim7.backend.main.infrastructure.registries import behavior_registry as behavior_module
from pixsim7.backend.main.infrastructure.registries.providers import ProviderDescriptor
from pixsim7.backend.main.shared.app_context import NoActiveAppError
from pixsim7.backend.main.shared.config import PACKAGE_DIR

# None of these pins schema creation or seeding: their apps start on a template clone.
pytestmark = [pytest.mark.integration, pytest.mark.rollback_db]

REPO_ROOT = Path(__file__).resolve().parents[2]

CONTRACT_KEYS = (
    "settings", "domain_registry", "db", "redis", "providers", "event_bus",
    "ecs_registry", "plugin_manager", "routes_manager", "behavior_registry",
    "middleware_manager", "startup",
)
# The keys holding mutable objects (everything but the settings).
OBJECT_KEYS = tuple(k for k in CONTRACT_KEYS if k != "settings")
# The legacy names below are used on purpose; their warning has its own test. They forward
# to whichever app runs in the process, so the rollback tier's shared apps are stopped first.
def uses_legacy_names(test: Any) -> Any:
    test = pytest.mark.filterwarnings(
        "ignore:the module-level .* is deprecated:DeprecationWarning")(test)
    return pytest.mark.usefixtures("no_shared_app_runs")(test)

# (module-level name, app.state key it stands for)
LEGACY_NAMES = {
    "domain_registry": (domain_registry_module.domain_registry, "domain_registry"),
    "behavior_registry": (behavior_module.behavior_registry, "behavior_registry"),
    "plugin_manager": (dependencies_module.plugin_manager, "plugin_manager"),
    "routes_manager": (dependencies_module.routes_manager, "routes_manager"),
    "middleware_manager": (middleware_module.middleware_manager, "middleware_manager"),
}


def plugins_without(tmp_path: Path, plugin_id: str) -> Path:
    """A copy of the bundled feature plugins without `plugin_id`."""
    target = tmp_path / f"feature_plugins_without_{plugin_id}"
    shutil.copytree(PACKAGE_DIR / "plugins", target)
    shutil.rmtree(target / plugin_id)
    return target


@pytest.fixture
async def no_shared_app_runs(kit_shared_apps) -> None:
    await kit_shared_apps.close()  # the next rollback test starts its app again


@pytest.fixture
async def two_apps(app_factory, make_settings, tmp_path) -> tuple[Any, Any]:
    """App A with every bundled feature plugin, then app B without game_stealth."""
    first = await app_factory(make_settings())
    second = await app_factory(
        make_settings(feature_plugins_dir=plugins_without(tmp_path, "game_stealth"))
    )
    assert first.started, first.startup_error
    assert second.started, second.startup_error
    return first, second


async def test_started_app_state_holds_every_contract_key(app_factory) -> None:
    running = await app_factory()
    assert running.started, running.startup_error
    missing = [key for key in CONTRACT_KEYS if getattr(running.app.state, key, None) is None]
    assert missing == []


async def test_apps_with_different_plugin_folders_enable_different_plugins(two_apps) -> None:
    first, second = two_apps
    assert "game_stealth" in first.app.state.plugin_manager.enabled_ids()
    assert sorted(second.app.state.plugin_manager.enabled_ids()) == ["mood", "relationships"]


async def test_two_apps_share_no_state_object(two_apps) -> None:
    first, second = two_apps
    shared = [key for key in OBJECT_KEYS
              if getattr(first.app.state, key) is getattr(second.app.state, key)]
    assert shared == []


async def test_route_plugin_modules_are_each_app_s_own_and_their_schemas_are_shared_classes(
        two_apps) -> None:
    # Each app runs the jobs route plugin's code into a module of its own; the request and
    # response models it uses are classes made once per process (api.schemas), and what the
    # OpenAPI document is built from (a dict, mutable) is each app's own.
    first, second = two_apps
    jobs_a, jobs_b = (running.app.state.routes_manager.module("jobs") for running in two_apps)
    assert jobs_a is not jobs_b and jobs_a.router is not jobs_b.router
    assert jobs_a.JobIn is jobs_b.JobIn is schemas.JobIn

    def body_schema(running: Any) -> dict[str, Any]:
        operation = running.app.openapi()["paths"]["/api/v1/jobs"]["post"]
        return operation["requestBody"]["content"]["application/json"]["schema"]

    schema_a, schema_b = body_schema(first), body_schema(second)
    assert schema_a == schema_b == schemas.JOB_IN_SCHEMA
    assert len({id(schema_a), id(schema_b), id(schemas.JOB_IN_SCHEMA)}) == 3


async def test_plugin_registration_in_one_app_is_absent_from_the_other(two_apps) -> None:
    first, second = two_apps
    assert "hide" in first.app.state.behavior_registry.ids("effect")
    assert "hide" not in second.app.state.behavior_registry.ids("effect")
    assert "stealth_defaults" not in second.app.state.behavior_registry.ids("simulation_config")


def forwarding_targets() -> dict[str, Any]:
    """The object each legacy name forwards to right now."""
    return {name: forwarder.summary.__self__ for name, (forwarder, _) in LEGACY_NAMES.items()}


def state_objects(running: Any) -> dict[str, Any]:
    return {name: getattr(running.app.state, key) for name, (_, key) in LEGACY_NAMES.items()}


@pytest.mark.template_db
@uses_legacy_names
async def test_legacy_names_forward_to_the_most_recently_started_app(two_apps) -> None:
    first, second = two_apps
    targets, expected = forwarding_targets(), state_objects(second)
    assert [name for name in LEGACY_NAMES if targets[name] is not expected[name]] == []


@pytest.mark.template_db
@uses_legacy_names
async def test_legacy_names_fall_back_to_the_earlier_app_once_the_latest_stops(
    two_apps,
) -> None:
    first, second = two_apps
    await second.stop()
    targets, expected = forwarding_targets(), state_objects(first)
    assert [name for name in LEGACY_NAMES if targets[name] is not expected[name]] == []


def names_still_forwarding() -> list[str]:
    """Legacy names that answer instead of raising NoActiveAppError."""
    answering = []
    for name, (forwarder, _) in LEGACY_NAMES.items():
        try:
            forwarder.summary()
        except NoActiveAppError:
            continue
        answering.append(name)
    return answering


@pytest.mark.template_db
@uses_legacy_names
def test_legacy_names_raise_no_active_app_when_no_app_runs() -> None:
    assert names_still_forwarding() == []


@pytest.mark.template_db
@uses_legacy_names
async def test_legacy_names_raise_no_active_app_once_the_app_stops(app_factory) -> None:
    running = await app_factory()
    assert running.started, running.startup_error
    assert names_still_forwarding() == list(LEGACY_NAMES)
    await running.stop()
    assert names_still_forwarding() == []


async def test_each_legacy_name_warns_naming_the_app_state_key_to_read(app_factory) -> None:
    running = await app_factory()
    assert running.started, running.startup_error
    for forwarder, key in LEGACY_NAMES.values():
        with pytest.warns(DeprecationWarning, match=rf"read app\.state\.{key}\b"):
            forwarder.summary()


def test_importing_main_builds_no_app() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "import pixsim7.backend.main.main as m; print(m._app)"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "None"


async def test_request_handlers_read_their_own_app_state(two_apps) -> None:
    first, second = two_apps
    first.app.state.providers.register(
        ProviderDescriptor(id="only-in-a", name="Only in A", operations=("text_to_video",))
    )
    in_first = await first.get("/api/v1/providers")
    in_second = await second.get("/api/v1/providers")
    assert (in_first.status_code, in_second.status_code) == (200, 200)
    assert "only-in-a" in [p["id"] for p in in_first.json()]
    assert "only-in-a" not in [p["id"] for p in in_second.json()]
