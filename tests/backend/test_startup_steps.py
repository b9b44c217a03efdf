"""Each startup step called on its own against a bare FastAPI app, and the plan runner."""

from __future__ import annotations

import ast
import dataclasses
import inspect
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from fastapi import FastAPI

from pixsim7.backend.main import startup
from pixsim7.backend.main.infrastructure.adapters.shared_servers import _listening
from pixsim7.backend.main.infrastructure.registries.behavior_registry import (
    BehaviorRegistryLockedError,
)
from pixsim7.backend.main.main import create_app
from pixsim7.backend.main.presets import DEFAULT_PRESETS
from pixsim7.backend.main.shared.config import DEFAULT_SECRET_KEY
from pixsim7.backend.main.startup import (
    PROFILES,
    Plan,
    PlanError,
    Policy,
    SettingsError,
    StartupAborted,
    Step,
    StepDegraded,
    StepOutcome,
    disable_plugins,
    run_plan,
    seed_presets,
    setup_behavior_registry_lock,
    setup_database,
    setup_database_and_seed,
    setup_domain_registry,
    setup_ecs_components,
    setup_embedded_services,
    setup_event_handlers,
    setup_plugins,
    setup_providers,
    setup_redis,
    teardown_database,
    teardown_event_handlers,
    teardown_redis,
    validate_settings,
)

pytestmark = pytest.mark.integration


def bare_app(settings: Any) -> FastAPI:
    app = FastAPI()
    app.state.settings = settings
    return app


@pytest.fixture
async def database(app_settings: Any) -> AsyncIterator[tuple[Any, Any]]:
    """A domain registry and a database built by their steps, handed on as a plan would."""
    registry = await setup_domain_registry(app_settings)
    db = await setup_database(app_settings, registry)
    try:
        yield registry, db
    finally:
        await teardown_database(db)


@pytest.fixture
async def plugin_inputs(app_settings, database) -> AsyncIterator[dict[str, Any]]:
    """Everything setup_plugins needs, each built by its own step."""
    _, db = database
    event_bus, ws_hub, _ = await setup_event_handlers()
    try:
        yield {"app": FastAPI(), "settings": app_settings, "db": db, "event_bus": event_bus,
               "providers": await setup_providers(),
               "ecs_registry": await setup_ecs_components()}
    finally:
        await teardown_event_handlers(event_bus, ws_hub)


# --- validate_settings ---------------------------------------------------------------------


async def test_validate_settings_gives_the_admin_token_from_settings(make_settings) -> None:
    assert await validate_settings(make_settings(admin_token="operator-token")) == (
        "operator-token")


async def test_validate_settings_makes_an_admin_token_in_debug_when_none_is_set(
    make_settings,
) -> None:
    token = await validate_settings(make_settings(admin_token=None, debug=True))
    assert isinstance(token, str) and len(token) >= 16


async def test_validate_settings_makes_no_admin_token_outside_debug(make_settings) -> None:
    settings = make_settings(admin_token=None, debug=False, secret_key="not-the-default")
    assert await validate_settings(settings) is None


async def test_validate_settings_refuses_default_secret_key_without_debug(make_settings) -> None:
    with pytest.raises(SettingsError, match="SECRET_KEY"):
        await validate_settings(make_settings(debug=False, secret_key=DEFAULT_SECRET_KEY))


async def test_validate_settings_refuses_missing_directory_naming_the_setting(
    make_settings, tmp_path
) -> None:
    with pytest.raises(SettingsError, match="FEATURE_PLUGINS_DIR") as caught:
        await validate_settings(make_settings(feature_plugins_dir=tmp_path / "no-such-folder"))
    assert "does not exist" in str(caught.value)


async def test_validate_settings_refuses_a_file_instead_of_a_folder(
    make_settings, tmp_path
) -> None:
    not_a_folder = tmp_path / "routes.txt"
    not_a_folder.write_text("not a folder")
    with pytest.raises(SettingsError, match="ROUTE_PLUGINS_DIR") as caught:
        await validate_settings(make_settings(route_plugins_dir=not_a_folder))
    assert "not a folder" in str(caught.value)


# --- domain registry and database ------------------------------------------------------------


async def test_setup_domain_registry_returns_core_and_game(app_settings) -> None:
    registry = await setup_domain_registry(app_settings)
    assert list(registry.packages) == ["core", "game"]


async def test_setup_database_creates_the_registry_tables(database, test_database) -> None:
    registry, _ = database
    expected = set(registry.table_names())
    conn = await asyncpg.connect(test_database.url)
    try:
        rows = await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        )
    finally:
        await conn.close()
    assert expected and expected <= {row["table_name"] for row in rows}


async def test_seed_presets_inserts_nothing_the_second_time(database, test_database,
                                                           app_settings) -> None:
    registry, db = database
    first = await seed_presets(app_settings, db, registry)
    second = await seed_presets(app_settings, db, registry)
    conn = await asyncpg.connect(test_database.url)
    try:
        stored = await conn.fetchval("SELECT count(*) FROM generation_presets")
    finally:
        await conn.close()
    assert (first, second, stored) == (len(DEFAULT_PRESETS), 0, len(DEFAULT_PRESETS))


async def test_seed_presets_is_skipped_and_reads_nothing_when_the_setting_says_so(
    database, test_database, app_settings
) -> None:
    registry, db = database
    conn = await asyncpg.connect(test_database.url)
    try:
        await conn.execute("DROP TABLE generation_presets")  # a read would fail loudly
    finally:
        await conn.close()
    skipping = app_settings.model_copy(update={"seed_default_presets": False})
    assert await seed_presets(skipping, db, registry) is None


async def test_setup_database_and_seed_creates_tables_and_seeds_presets(app_settings,
                                                                       test_database) -> None:
    registry = await setup_domain_registry(app_settings)
    db = await setup_database_and_seed(app_settings, registry)
    try:
        conn = await asyncpg.connect(test_database.url)
        try:
            stored = await conn.fetchval("SELECT count(*) FROM generation_presets")
        finally:
            await conn.close()
        assert stored == len(DEFAULT_PRESETS)
    finally:
        await teardown_database(db)


# --- Redis ---------------------------------------------------------------------------------


async def test_setup_redis_is_available_against_the_kit_redis(app_settings) -> None:
    status = await setup_redis(app_settings)
    try:
        assert (status.configured, status.available) == (True, True)
        assert await status.client.ping()
    finally:
        await teardown_redis(status)


async def test_setup_redis_without_a_url_is_not_configured(make_settings) -> None:
    status = await setup_redis(make_settings(redis_url=None))
    assert (status.client, status.configured, status.available) == (None, False, False)


async def test_redis_state_follows_a_refresh_when_redis_goes_and_comes_back(
    make_settings, fault_proxy
) -> None:
    proxy = fault_proxy("redis")
    redis = await setup_redis(make_settings(redis_proxy=proxy, redis_connect_timeout=0.5))
    try:
        assert redis.available is True
        proxy.cut()
        assert await redis.refresh(0.5) is False
        assert (redis.available, redis.error) == (False, "ConnectionError")
        proxy.restore()
        assert await redis.refresh(0.5) is True
        assert (redis.available, redis.error) == (True, None)
    finally:
        await teardown_redis(redis)


async def test_setup_redis_reports_unavailable_when_redis_is_cut(
    make_settings, fault_proxy
) -> None:
    proxy = fault_proxy("redis")
    proxy.cut()
    status = await setup_redis(make_settings(redis_proxy=proxy, redis_connect_timeout=0.5))
    try:
        assert (status.configured, status.available) == (True, False)
    finally:
        await teardown_redis(status)


# --- providers, events, ECS -------------------------------------------------------------------


async def test_setup_providers_gives_the_default_providers() -> None:
    registry = await setup_providers()
    assert registry.ids() == ["pixverse", "runway", "sora"]


async def test_setup_event_handlers_counts_a_published_event() -> None:
    bus, hub, metrics = await setup_event_handlers()
    try:
        await bus.publish("test.ping", {"n": 1})
        assert metrics.counts == {"test.ping": 1}
    finally:
        await teardown_event_handlers(bus, hub)


async def test_setup_ecs_components_registers_the_core_components() -> None:
    registry = await setup_ecs_components()
    assert registry.names() == ["inventory", "needs", "relationships", "transform"]


# --- plugins and the behavior registry lock ---------------------------------------------------


async def test_setup_plugins_gives_the_registries_and_both_managers(plugin_inputs) -> None:
    behaviors, jobs, feature, route = await setup_plugins(**plugin_inputs)
    try:
        assert (feature.kind, route.kind) == ("feature", "route")
        assert sorted(feature.enabled_ids()) == ["game_stealth", "mood", "relationships"]
        assert sorted(route.enabled_ids()) == ["jobs", "presets", "providers"]
        assert "mood.evaluate" in jobs.names() and not behaviors.locked
    finally:
        await disable_plugins(feature, route)


async def test_registering_after_the_behavior_registry_lock_raises(plugin_inputs) -> None:
    behaviors, jobs, *managers = await setup_plugins(**plugin_inputs)
    try:
        await setup_behavior_registry_lock(behaviors, jobs)
        with pytest.raises(BehaviorRegistryLockedError):
            behaviors.register_condition("late", lambda: True, plugin_id="latecomer")
        assert "late" not in behaviors.ids("condition")
    finally:
        await disable_plugins(*managers)


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


async def test_required_step_that_reports_degraded_aborts_and_undoes_what_it_started(
    app_settings,
) -> None:
    journal = Journal()
    plan = (journal.step("first"), journal.step("queue", reports="degraded"))
    app = bare_app(app_settings)
    with pytest.raises(StartupAborted) as caught:
        async with run_plan(app, plan, "test"):
            pytest.fail("the plan should not have started")
    assert (caught.value.step, type(caught.value.cause)) == ("queue", StepDegraded)
    assert caught.value.timeline.status("queue") == "failed"
    # It ran, so what it opened (a half-connected client) is closed before the abort.
    assert journal.calls == ["run first", "run queue", "teardown queue", "teardown first"]


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


# --- needs and provides -----------------------------------------------------------------------


def resource_step(name: str, provides: tuple[str, ...] = (), *needs: str,
                  calls: list[str] | None = None) -> Step:
    """A step needing `needs` (as its parameters) and providing `provides`, each a string."""
    params = ", ".join(needs)
    namespace: dict[str, Any] = {"calls": calls if calls is not None else []}
    values = ", ".join(f"'{name}:{key}'" for key in provides) + ("," if len(provides) > 1 else "")
    exec(f"async def run({params}):\n    calls.append(({name!r}, [{params}]))\n"
         f"    return ({values}) if {len(provides)} else None", namespace)
    return Step(name, namespace["run"], Policy.REQUIRED, provides=provides)


def test_a_step_placed_before_the_one_it_needs_is_refused_naming_both() -> None:
    with pytest.raises(PlanError) as caught:
        Plan((resource_step("database", ("db",), "registry"),
              resource_step("domain_registry", ("registry",))))
    assert str(caught.value) == ("step 'database' needs 'registry', which step "
                                 "'domain_registry' provides later; place 'database' after "
                                 "'domain_registry'")


def test_a_need_nobody_provides_is_refused() -> None:
    with pytest.raises(PlanError, match="step 'seed' needs 'db', which no step of the plan "
                                        r"provides \(given: app, settings\)"):
        Plan((resource_step("seed", (), "db"),))


def test_a_resource_provided_twice_is_refused_naming_both_steps() -> None:
    with pytest.raises(PlanError, match="'db' is provided twice: by step 'database' and by "
                                        "step 'replica'"):
        Plan((resource_step("database", ("db",)), resource_step("replica", ("db",))))
    with pytest.raises(PlanError, match="'settings' is provided twice: it is given"):
        Plan((resource_step("settings_again", ("settings",)),))


def test_a_need_annotated_with_the_wrong_type_is_refused_when_the_step_is_declared() -> None:
    async def run(db: str) -> None:
        return None

    with pytest.raises(PlanError, match="parameter 'db' is annotated <class 'str'>, but the "
                                        "resource 'db' is a"):
        Step("database_user", run, Policy.REQUIRED)


async def test_a_step_providing_the_wrong_type_fails_naming_the_resource(app_settings) -> None:
    async def run() -> str:
        return "not a database"

    app = bare_app(app_settings)
    with pytest.raises(StartupAborted) as caught:
        async with run_plan(app, (Step("database", run, Policy.REQUIRED, provides=("db",)),)):
            pytest.fail("the plan should not have started")
    assert "step 'database' provided 'db' as a str; it must be a" in str(caught.value)


async def test_the_runner_hands_each_step_its_inputs_publishes_outputs_and_tears_down_with_them(
    app_settings,
) -> None:
    calls: list[tuple[str, list[str]]] = []
    torn: list[Any] = []

    async def close(source: str) -> None:
        torn.append(source)

    source = dataclasses.replace(resource_step("source", ("source",), calls=calls),
                                 teardown=close)
    plan = Plan((source, resource_step("sink", ("sink",), "source", calls=calls)))
    app = bare_app(app_settings)
    async with run_plan(app, plan, "test"):
        assert (app.state.source, app.state.sink) == ("source:source", "sink:sink")
    assert calls == [("source", []), ("sink", ["source:source"])]
    assert torn == ["source:source"]


async def test_the_settings_published_carry_the_embedded_servers_urls(
    make_settings, servers_data_dir
) -> None:
    # DATABASE_URL is the kit's; REDIS_URL unset in debug starts an embedded Redis.
    configured = make_settings(debug=True, redis_url=None, data_dir=servers_data_dir)
    app = bare_app(configured)
    plan = Plan((validate_settings, setup_embedded_services, setup_redis))
    async with run_plan(app, plan, "test"):
        url = app.state.embedded.urls["redis"]
        assert app.state.settings.redis_url == url
        assert app.state.settings.database_url == configured.database_url
        assert app.state.redis.available  # the step after it connected to that server
    assert configured.redis_url is None  # the settings given are left as they were
    assert not _listening(url)  # nobody else used it: stopped with the app


async def test_a_need_whose_degrading_provider_failed_is_none_if_optional_else_named(
    app_settings,
) -> None:
    async def cache() -> str:
        raise RuntimeError("cache is down")

    async def reader(cache: str | None = None) -> StepOutcome:
        seen.append(cache)
        return StepOutcome()

    async def writer(cache: str) -> None:
        return None

    seen: list[Any] = []
    provider = Step("cache", cache, Policy.DEGRADING, provides=("cache",))
    plan = Plan((provider, Step("reader", reader, Policy.REQUIRED)))
    async with run_plan(bare_app(app_settings), plan, "test") as timeline:
        assert timeline.status("reader") == "ok" and seen == [None]
    plan = Plan((provider, Step("writer", writer, Policy.REQUIRED)))
    with pytest.raises(StartupAborted) as caught:
        async with run_plan(bare_app(app_settings), plan, "test"):
            pytest.fail("the plan should not have started")
    assert str(caught.value.cause) == ("step 'writer' needs 'cache', which step 'cache' did "
                                       "not provide (it failed)")


def test_the_shipped_profiles_graphs(snapshot_json) -> None:
    assert {name: {"given": list(profile.plan.given), "steps": profile.plan.graph()}
            for name, profile in PROFILES.items()} == snapshot_json


def test_each_profile_is_one_value_the_app_follows() -> None:
    api, worker = create_app(profile="api"), create_app(profile="worker")
    assert PROFILES["api"].serves_http and not PROFILES["worker"].serves_http
    assert {"/", "/ready", "/metrics", "/api/v1/admin/startup"} <= set(api.openapi()["paths"])
    assert worker.router.routes == []
    assert [s.provides[-1] for s in PROFILES["worker"].plan if s.name == "plugins"] == [
        "plugin_manager"]
    # Read from the plan's own steps: what the plugins step loads, what settings refuses.
    assert (PROFILES["api"].plugin_kinds, PROFILES["worker"].plugin_kinds) == (
        ("feature", "route"), ("feature",))
    assert (set(PROFILES["api"].required_settings), set(PROFILES["worker"].required_settings)) == (
        set(), {"redis_url"})


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
