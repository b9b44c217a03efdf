"""Each startup step called on its own against a bare FastAPI app, and the plan runner."""

from __future__ import annotations

import ast
import inspect
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from fastapi import FastAPI

from pixsim7.backend.main import startup
from pixsim7.backend.main.infrastructure.database.seed import DEFAULT_PRESETS
from pixsim7.backend.main.infrastructure.plugins.behavior_registry import (
    BehaviorRegistryLockedError,
)
from pixsim7.backend.main.shared.config import DEFAULT_SECRET_KEY
from pixsim7.backend.main.startup import (
    Policy,
    SettingsError,
    StartupAborted,
    Step,
    StepDegraded,
    StepOutcome,
    run_plan,
    seed_presets,
    setup_behavior_registry_lock,
    setup_database,
    setup_database_and_seed,
    setup_domain_registry,
    setup_ecs_components,
    setup_event_handlers,
    setup_plugins,
    setup_providers,
    setup_redis,
    teardown_database,
    teardown_event_handlers,
    teardown_plugins,
    teardown_redis,
    validate_settings,
)

pytestmark = pytest.mark.integration


def bare_app(settings: Any) -> FastAPI:
    app = FastAPI()
    app.state.settings = settings
    return app


@pytest.fixture
async def database_app(app_settings: Any) -> AsyncIterator[FastAPI]:
    """A bare app after validate_settings, setup_domain_registry and setup_database."""
    app = bare_app(app_settings)
    await validate_settings(app)
    await setup_domain_registry(app)
    await setup_database(app)
    try:
        yield app
    finally:
        await teardown_database(app)


@pytest.fixture
async def plugin_ready_app(database_app: FastAPI) -> AsyncIterator[FastAPI]:
    """A bare app holding everything setup_plugins reads: db, event bus, providers, ECS."""
    await setup_providers(database_app)
    await setup_event_handlers(database_app)
    await setup_ecs_components(database_app)
    try:
        yield database_app
    finally:
        await teardown_event_handlers(database_app)


# --- validate_settings ---------------------------------------------------------------------


async def test_validate_settings_sets_admin_token_from_settings(make_settings) -> None:
    app = bare_app(make_settings(admin_token="operator-token"))
    await validate_settings(app)
    assert app.state.admin_token == "operator-token"


async def test_validate_settings_makes_an_admin_token_in_debug_when_none_is_set(
    make_settings,
) -> None:
    app = bare_app(make_settings(admin_token=None, debug=True))
    await validate_settings(app)
    assert isinstance(app.state.admin_token, str) and len(app.state.admin_token) >= 16


async def test_validate_settings_makes_no_admin_token_outside_debug(make_settings) -> None:
    app = bare_app(make_settings(admin_token=None, debug=False, secret_key="not-the-default"))
    await validate_settings(app)
    assert app.state.admin_token is None


async def test_validate_settings_refuses_default_secret_key_without_debug(make_settings) -> None:
    app = bare_app(make_settings(debug=False, secret_key=DEFAULT_SECRET_KEY))
    with pytest.raises(SettingsError, match="SECRET_KEY"):
        await validate_settings(app)


async def test_validate_settings_refuses_missing_directory_naming_the_setting(
    make_settings, tmp_path
) -> None:
    app = bare_app(make_settings(feature_plugins_dir=tmp_path / "no-such-folder"))
    with pytest.raises(SettingsError, match="FEATURE_PLUGINS_DIR") as caught:
        await validate_settings(app)
    assert "does not exist" in str(caught.value)


async def test_validate_settings_refuses_a_file_instead_of_a_folder(
    make_settings, tmp_path
) -> None:
    not_a_folder = tmp_path / "routes.txt"
    not_a_folder.write_text("not a folder")
    app = bare_app(make_settings(route_plugins_dir=not_a_folder))
    with pytest.raises(SettingsError, match="ROUTE_PLUGINS_DIR") as caught:
        await validate_settings(app)
    assert "not a folder" in str(caught.value)


# --- domain registry and database ------------------------------------------------------------


async def test_setup_domain_registry_returns_core_and_game_on_app_state(app_settings) -> None:
    app = bare_app(app_settings)
    registry = await setup_domain_registry(app)
    assert list(registry.packages) == ["core", "game"]
    assert app.state.domain_registry is registry


async def test_setup_database_creates_the_registry_tables(database_app, test_database) -> None:
    expected = set(database_app.state.domain_registry.table_names())
    conn = await asyncpg.connect(test_database.url)
    try:
        rows = await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        )
    finally:
        await conn.close()
    assert expected and expected <= {row["table_name"] for row in rows}


async def test_seed_presets_inserts_nothing_the_second_time(database_app, test_database) -> None:
    first = await seed_presets(database_app)
    second = await seed_presets(database_app)
    conn = await asyncpg.connect(test_database.url)
    try:
        stored = await conn.fetchval("SELECT count(*) FROM generation_presets")
    finally:
        await conn.close()
    assert (first, second, stored) == (len(DEFAULT_PRESETS), 0, len(DEFAULT_PRESETS))


async def test_setup_database_and_seed_creates_tables_and_seeds_presets(app_settings,
                                                                       test_database) -> None:
    app = bare_app(app_settings)
    await validate_settings(app)
    await setup_domain_registry(app)
    db = await setup_database_and_seed(app)
    try:
        assert app.state.db is db
        conn = await asyncpg.connect(test_database.url)
        try:
            stored = await conn.fetchval("SELECT count(*) FROM generation_presets")
        finally:
            await conn.close()
        assert stored == len(DEFAULT_PRESETS)
    finally:
        await teardown_database(app)


# --- Redis ---------------------------------------------------------------------------------


async def test_setup_redis_is_available_against_the_kit_redis(app_settings) -> None:
    app = bare_app(app_settings)
    status = await setup_redis(app)
    try:
        assert app.state.redis is status
        assert (status.configured, status.available) == (True, True)
        assert await status.client.ping()
    finally:
        await teardown_redis(app)


async def test_setup_redis_without_a_url_is_not_configured(make_settings) -> None:
    app = bare_app(make_settings(redis_url=None))
    status = await setup_redis(app)
    assert app.state.redis is status
    assert (status.client, status.configured, status.available) == (None, False, False)


async def test_redis_state_follows_a_refresh_when_redis_goes_and_comes_back(
    make_settings, fault_proxy
) -> None:
    proxy = fault_proxy("redis")
    app = bare_app(make_settings(redis_proxy=proxy, redis_connect_timeout=0.5))
    redis = await setup_redis(app)
    try:
        assert redis.available is True
        proxy.cut()
        assert await redis.refresh(0.5) is False
        assert (app.state.redis.available, app.state.redis.error) == (False, "ConnectionError")
        proxy.restore()
        assert await redis.refresh(0.5) is True
        assert (app.state.redis.available, app.state.redis.error) == (True, None)
    finally:
        await teardown_redis(app)


async def test_setup_redis_reports_unavailable_when_redis_is_cut(
    make_settings, fault_proxy
) -> None:
    proxy = fault_proxy("redis")
    proxy.cut()
    app = bare_app(make_settings(redis_proxy=proxy, redis_connect_timeout=0.5))
    status = await setup_redis(app)
    try:
        assert (status.configured, status.available) == (True, False)
        assert app.state.redis is status
    finally:
        await teardown_redis(app)


# --- providers, events, ECS -------------------------------------------------------------------


async def test_setup_providers_stores_the_default_providers(app_settings) -> None:
    app = bare_app(app_settings)
    registry = await setup_providers(app)
    assert registry.ids() == ["pixverse", "runway", "sora"]
    assert app.state.providers is registry


async def test_setup_event_handlers_counts_a_published_event(app_settings) -> None:
    app = bare_app(app_settings)
    bus = await setup_event_handlers(app)
    try:
        await bus.publish("test.ping", {"n": 1})
        assert app.state.event_bus is bus
        assert app.state.event_metrics.counts == {"test.ping": 1}
    finally:
        await teardown_event_handlers(app)


async def test_setup_ecs_components_returns_how_many_it_registered(app_settings) -> None:
    app = bare_app(app_settings)
    count = await setup_ecs_components(app)
    assert count == len(app.state.ecs_registry) > 0


# --- plugins and the behavior registry lock ---------------------------------------------------


async def test_setup_plugins_returns_feature_and_route_managers_on_app_state(
    plugin_ready_app,
) -> None:
    feature, route = await setup_plugins(plugin_ready_app)
    try:
        assert (feature.kind, route.kind) == ("feature", "route")
        assert plugin_ready_app.state.plugin_manager is feature
        assert plugin_ready_app.state.routes_manager is route
        assert sorted(feature.enabled_ids()) == ["game_stealth", "mood", "relationships"]
        assert sorted(route.enabled_ids()) == ["jobs", "presets", "providers"]
    finally:
        await teardown_plugins(plugin_ready_app)


async def test_registering_after_the_behavior_registry_lock_raises(plugin_ready_app) -> None:
    await setup_plugins(plugin_ready_app)
    try:
        registry = await setup_behavior_registry_lock(plugin_ready_app)
        with pytest.raises(BehaviorRegistryLockedError):
            registry.register_condition("late", lambda: True, plugin_id="latecomer")
        assert "late" not in registry.ids("condition")
    finally:
        await teardown_plugins(plugin_ready_app)


# --- run_plan ------------------------------------------------------------------------------


class Journal:
    """Builds steps that write what they do into one list."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def step(self, name: str, policy: Policy = Policy.REQUIRED, *, fails: bool = False,
             reports: str = "ok", teardown: bool = True, teardown_fails: bool = False) -> Step:
        async def run(app: FastAPI) -> StepOutcome:
            self.calls.append(f"run {name}")
            if fails:
                raise RuntimeError(f"{name} broke")
            return StepOutcome(status=reports)

        async def down(app: FastAPI) -> None:
            self.calls.append(f"teardown {name}")
            if teardown_fails:
                raise RuntimeError(f"{name} teardown broke")

        return Step(name, run, policy, down if teardown else None)


async def test_run_plan_runs_steps_in_order_then_teardowns_in_reverse(app_settings) -> None:
    journal = Journal()
    plan = (journal.step("first"), journal.step("second"), journal.step("third"))
    app = bare_app(app_settings)
    async with run_plan(app, plan, "test"):
        assert app.state.lifecycle == "ready"
    assert journal.calls == ["run first", "run second", "run third",
                             "teardown third", "teardown second", "teardown first"]


async def test_required_step_failure_aborts_naming_it_and_tears_down_completed_steps(
    app_settings,
) -> None:
    journal = Journal()
    plan = (journal.step("first"), journal.step("second"), journal.step("broken", fails=True),
            journal.step("never"))
    app = bare_app(app_settings)
    with pytest.raises(StartupAborted) as caught:
        async with run_plan(app, plan, "test"):
            pytest.fail("the plan should not have started")
    assert caught.value.step == "broken"
    assert "broken" in str(caught.value)
    assert journal.calls == ["run first", "run second", "run broken",
                             "teardown second", "teardown first"]


async def test_optional_step_failure_is_recorded_failed_and_startup_completes_ok(
    app_settings,
) -> None:
    journal = Journal()
    plan = (journal.step("first"), journal.step("extra", Policy.OPTIONAL, fails=True),
            journal.step("last"))
    app = bare_app(app_settings)
    async with run_plan(app, plan, "test") as timeline:
        assert app.state.lifecycle == "ready"
        assert (timeline.status("extra"), timeline.status("complete")) == ("failed", "ok")
    assert journal.calls == ["run first", "run extra", "run last",
                             "teardown last", "teardown first"]  # nothing of extra's to undo


async def test_degrading_step_failure_is_recorded_degraded_and_startup_completes_degraded(
    app_settings,
) -> None:
    journal = Journal()
    plan = (journal.step("first"), journal.step("cache", Policy.DEGRADING, fails=True),
            journal.step("last"))
    app = bare_app(app_settings)
    async with run_plan(app, plan, "test") as timeline:
        assert app.state.lifecycle == "ready"
        assert (timeline.status("cache"), timeline.status("complete")) == ("degraded", "degraded")
    record = next(r for r in timeline.records if r.step == "cache")
    assert record.error == "RuntimeError: cache broke"
    assert "teardown cache" not in journal.calls


async def test_degrading_step_that_reports_degraded_is_torn_down(app_settings) -> None:
    journal = Journal()
    plan = (journal.step("cache", Policy.DEGRADING, reports="degraded"),)
    app = bare_app(app_settings)
    async with run_plan(app, plan, "test") as timeline:
        assert timeline.status("complete") == "degraded"
    assert journal.calls == ["run cache", "teardown cache"]


async def test_required_step_that_reports_degraded_aborts(app_settings) -> None:
    journal = Journal()
    plan = (journal.step("first"), journal.step("queue", reports="degraded"))
    app = bare_app(app_settings)
    with pytest.raises(StartupAborted) as caught:
        async with run_plan(app, plan, "test"):
            pytest.fail("the plan should not have started")
    assert (caught.value.step, type(caught.value.cause)) == ("queue", StepDegraded)
    assert caught.value.timeline.status("queue") == "failed"
    assert journal.calls == ["run first", "run queue", "teardown first"]


async def test_per_plugin_step_that_raises_aborts(app_settings) -> None:
    journal = Journal()
    plan = (journal.step("first"), journal.step("plugins", Policy.PER_PLUGIN, fails=True))
    app = bare_app(app_settings)
    with pytest.raises(StartupAborted, match="plugins"):
        async with run_plan(app, plan, "test"):
            pytest.fail("the plan should not have started")
    assert journal.calls == ["run first", "run plugins", "teardown first"]


async def test_skipped_step_is_not_torn_down_and_leaves_no_shutdown_record(app_settings) -> None:
    journal = Journal()
    plan = (journal.step("first"), journal.step("embedded", reports="skipped"))
    app = bare_app(app_settings)
    async with run_plan(app, plan, "test") as timeline:
        assert timeline.status("embedded") == "skipped"
    assert journal.calls == ["run first", "run embedded", "teardown first"]
    assert timeline.status("embedded", phase="shutdown") is None


async def test_failing_teardown_is_recorded_and_the_other_teardowns_still_run(
    app_settings,
) -> None:
    journal = Journal()
    plan = (journal.step("first"), journal.step("second", teardown_fails=True),
            journal.step("third"))
    app = bare_app(app_settings)
    async with run_plan(app, plan, "test") as timeline:
        pass
    assert journal.calls[3:] == ["teardown third", "teardown second", "teardown first"]
    assert timeline.status("second", phase="shutdown") == "failed"
    assert timeline.status("first", phase="shutdown") == "ok"
    assert timeline.status("third", phase="shutdown") == "ok"


# --- no hard-coded paths -------------------------------------------------------------------


@pytest.mark.parametrize("module", [startup.runner, startup.timeline, startup.steps],
                         ids=lambda m: m.__name__)
def test_startup_modules_have_no_path_literals(module) -> None:
    source = inspect.getsource(module)
    literals = [node.value for node in ast.walk(ast.parse(source))
                if isinstance(node, ast.Constant) and isinstance(node.value, str)]
    pathlike = [value for value in literals
                if "pixsim7/backend" in value.replace("\\", "/")
                or value.rstrip("/").endswith("domain_models")
                or any(f"{folder}/" in value or f"/{folder}" in value
                       for folder in ("plugins", "routes", "middleware"))]
    assert '"pixsim7/backend' not in source
    assert 'domain_models"' not in source
    assert pathlike == []
