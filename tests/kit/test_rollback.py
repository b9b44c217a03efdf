"""The rollback tier: one started app per worker and settings, each test rolled back."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest
from pixsim7_testing.rollback import (
    RollbackScope,
    RollbackTierError,
    SharedApps,
    SharedConnectionBusy,
)
from sqlalchemy import text

from pixsim7.backend.main.presets import DEFAULT_PRESETS

pytestmark = pytest.mark.integration

SEEDED = sorted(preset["name"] for preset in DEFAULT_PRESETS)
PRESET = {"provider_id": "pixverse", "operation": "text_to_video"}
APPS_SEEN: list[object] = []  # this worker's shared apps, in the order tests got them


async def names(running) -> list[str]:
    response = await running.get("/api/v1/presets")
    assert response.status_code == 200, response.text
    return sorted(preset["name"] for preset in response.json())


@pytest.mark.rollback_db
@pytest.mark.parametrize("round_", range(4))
async def test_what_a_route_commits_is_seen_in_the_test_and_gone_in_the_next(
    app_factory, round_
) -> None:
    # Four rounds on two workers: at least one worker runs two of them on one app.
    running = await app_factory()
    assert running.started, running.startup_error
    # Unless another test retired it meanwhile, the previous round's app is this one.
    if APPS_SEEN and APPS_SEEN[-1].state.lifecycle == "ready":
        assert running.app is APPS_SEEN[-1], "the worker's tests should share one app"
    APPS_SEEN.append(running.app)
    assert await names(running) == SEEDED  # no earlier round's row
    created = await running.client.post("/api/v1/presets", json={"name": "same", **PRESET})
    assert created.status_code == 201, created.text
    assert await names(running) == sorted([*SEEDED, "same"])


@pytest.mark.rollback_db
async def test_other_settings_get_an_app_of_their_own(app_factory, make_settings) -> None:
    default = await app_factory()
    other = await app_factory(make_settings(ready_cache_ttl=0.0))
    assert other.app is not default.app
    assert other.app.state.db is not default.app.state.db
    assert await app_factory() is not default  # a view of its own...
    assert (await app_factory()).app is default.app  # ...of the same app


@pytest.mark.rollback_db
def test_a_database_of_the_test_s_own_is_refused_naming_template_db(request) -> None:
    with pytest.raises(RollbackTierError, match="test_database .*template_db"):
        request.getfixturevalue("test_database")


@pytest.mark.rollback_db
def test_real_processes_and_fault_proxies_are_refused_naming_template_db(
    request, make_settings, fault_proxy
) -> None:
    with pytest.raises(RollbackTierError, match="backend process.*template_db"):
        request.getfixturevalue("backend_services_env")
    with pytest.raises(RollbackTierError, match="fault proxy.*template_db"):
        make_settings(redis_proxy=fault_proxy("redis"))


@pytest.mark.rollback_db
async def test_concurrent_requests_of_one_test_are_serialized_on_its_connection(
    app_factory
) -> None:
    running = await app_factory()
    posts = [running.client.post("/api/v1/presets", json={"name": f"c{i}", **PRESET})
             for i in range(8)]
    answers = await asyncio.gather(*posts, *(running.get("/api/v1/presets") for _ in range(4)))
    assert [a.status_code for a in answers] == [201] * 8 + [200] * 4
    assert await names(running) == sorted([*SEEDED, *(f"c{i}" for i in range(8))])


# The tier's mechanics, driven through the kit's own objects on the worker's shared apps.


@pytest.mark.rollback_db
async def test_a_session_waiting_on_a_held_one_fails_saying_why(
    kit_shared_apps: SharedApps, shared_app
) -> None:
    shared = await shared_app()
    scope = RollbackScope(kit_shared_apps)
    scope._gate.timeout = 0.2
    await scope.take(shared)
    db = shared.app.state.db
    try:
        async with db.session():
            waiting = asyncio.create_task(_open_session(db))
            with pytest.raises(SharedConnectionBusy, match="one at a time.*template_db"):
                await waiting
    finally:
        await scope.close()


async def _open_session(db) -> None:
    async with db.session() as session:
        await session.execute(text("SELECT 1"))


@pytest.mark.rollback_db
async def test_advisory_locks_fail_the_test_and_do_not_outlive_it(
    kit_shared_apps: SharedApps, shared_app, kit_services
) -> None:
    shared = await shared_app()
    scope = RollbackScope(kit_shared_apps)
    await scope.take(shared)
    async with shared.app.state.db.session() as session:
        await session.execute(text("SELECT pg_advisory_lock(424242)"))
    with pytest.raises(RollbackTierError, match="advisory lock.*template_db"):
        await scope.close()
    conn = await asyncpg.connect(kit_services.postgres.url())
    try:
        held = await conn.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 424242")
    finally:
        await conn.close()
    assert held == 0


@pytest.mark.rollback_db
async def test_redis_keys_and_queued_jobs_go_with_the_test(
    kit_shared_apps: SharedApps, shared_app
) -> None:
    shared = await shared_app()
    scope = RollbackScope(kit_shared_apps)
    running = await scope.take(shared)
    queued = await running.client.post(
        "/api/v1/jobs", json={"kind": "noop", "payload": {"value": 1}},
        headers={"Authorization": "Bearer kit-admin-token"})
    assert queued.status_code == 202, queued.text
    job_id = queued.json()["id"]
    client = kit_shared_apps.namespace.client()
    try:
        assert await client.exists(f"arq:job:{job_id}")
        await scope.close()
        await running.release()
        assert await kit_shared_apps.namespace.keys() == []
        assert not await client.exists(f"arq:job:{job_id}")
    finally:
        await client.aclose()


@pytest.mark.rollback_db
async def test_event_subscribers_a_test_added_are_dropped(
    kit_shared_apps: SharedApps, shared_app
) -> None:
    shared = await shared_app()
    bus = shared.app.state.event_bus
    before = bus.subscriptions()
    scope = RollbackScope(kit_shared_apps)
    await scope.take(shared)
    bus.subscribe("preset.created", lambda event: None, name="left-by-a-test")
    await scope.close()
    assert bus.subscriptions() == before
    assert (await shared_app()) is shared  # still shared


@pytest.mark.rollback_db
async def test_an_app_a_test_changed_or_stopped_is_replaced(
    kit_shared_apps: SharedApps, shared_app
) -> None:
    shared = await shared_app()
    scope = RollbackScope(kit_shared_apps)
    running = await scope.take(shared)
    await running.app.state.plugin_manager.disable_all()
    await scope.close()
    await running.release()
    fresh = await shared_app()
    assert fresh is not shared and not shared.running.running
    assert fresh.app.state.plugin_manager.plugins["mood"].status == "enabled"

    scope = RollbackScope(kit_shared_apps)
    running = await scope.take(fresh)
    await running.stop()
    await scope.close()
    assert (await shared_app()) is not fresh


@pytest.mark.rollback_db
async def test_rows_committed_around_the_transaction_fail_the_test_and_renew_the_database(
    kit_shared_apps: SharedApps, shared_app
) -> None:
    shared = await shared_app()
    before = kit_shared_apps.database
    scope = RollbackScope(kit_shared_apps)
    await scope.take(shared)
    async with shared.app.state.db.engine.begin() as own:  # not one of the app's sessions
        await own.execute(text("INSERT INTO generation_presets (name, provider_id, operation, "
                               "params) VALUES ('sneaked', 'pixverse', 'text_to_video', '{}')"))
    with pytest.raises(RollbackTierError, match="generation_presets were committed.*template_db"):
        await scope.close()
    assert kit_shared_apps.database != before and not shared.running.running
    fresh = await shared_app()
    scope = RollbackScope(kit_shared_apps)
    assert await names(await scope.take(fresh)) == SEEDED
    await scope.close()


@pytest.fixture
def shared_app(kit_shared_apps: SharedApps, make_settings):
    """`await shared_app()`: the worker's shared app for the settings app_factory gives a
    rollback test without overrides."""
    from pixsim7.backend.main.main import create_app

    return lambda: kit_shared_apps.get(create_app, make_settings())


# --- what a rollback does not undo: reset by the tier, or refused naming it -------------------

async def taken(kit_shared_apps: SharedApps, shared_app) -> tuple[Any, RollbackScope, Any]:
    """The worker's shared app, a test's scope on it, and the view the scope gave."""
    shared = await shared_app()
    scope = RollbackScope(kit_shared_apps)
    return shared, scope, await scope.take(shared)


SEQUENCE = "generation_presets_id_seq"


async def _own_connection(kit_shared_apps: SharedApps) -> asyncpg.Connection:
    """A connection of the test's own to the tier's database, as a test might open."""
    return await asyncpg.connect(kit_shared_apps.database.url)


@pytest.mark.rollback_db
async def test_an_update_committed_by_another_connection_is_refused_and_renews_the_database(
    kit_shared_apps: SharedApps, shared_app
) -> None:
    before = kit_shared_apps.database
    shared, scope, _ = await taken(kit_shared_apps, shared_app)
    conn = await _own_connection(kit_shared_apps)
    try:  # row counts stay the same: only the newest xmin tells
        await conn.execute("UPDATE generation_presets SET name = name || '-renamed' "
                           "WHERE name = $1", SEEDED[0])
    finally:
        await conn.close()
    with pytest.raises(RollbackTierError, match="generation_presets were committed"):
        await scope.close()
    assert kit_shared_apps.database != before
    fresh = await shared_app()
    scope = RollbackScope(kit_shared_apps)
    assert await names(await scope.take(fresh)) == SEEDED
    await scope.close()


@pytest.mark.rollback_db
async def test_ddl_committed_by_another_connection_is_refused(
    kit_shared_apps: SharedApps, shared_app
) -> None:
    shared, scope, _ = await taken(kit_shared_apps, shared_app)
    conn = await _own_connection(kit_shared_apps)
    try:
        await conn.execute("CREATE TABLE left_behind (id int)")
    finally:
        await conn.close()
    with pytest.raises(RollbackTierError, match="created, altered or dropped and committed"):
        await scope.close()


@pytest.mark.rollback_db
async def test_an_advisory_lock_on_a_connection_the_test_left_open_is_refused(
    kit_shared_apps: SharedApps, shared_app
) -> None:
    shared, scope, _ = await taken(kit_shared_apps, shared_app)
    conn = await _own_connection(kit_shared_apps)
    await conn.execute("SELECT pg_advisory_lock(515151)")
    try:
        with pytest.raises(RollbackTierError, match="advisory lock.*left open"):
            await scope.close()
    finally:
        await conn.close()


@pytest.mark.rollback_db
async def test_sequences_and_prepared_statements_are_put_back(
    kit_shared_apps: SharedApps, shared_app
) -> None:
    shared, scope, running = await taken(kit_shared_apps, shared_app)
    async with shared.app.state.db.session() as session:
        before = await session.scalar(text(f"SELECT last_value FROM {SEQUENCE}"))
    created = await running.client.post("/api/v1/presets", json={"name": "seq", **PRESET})
    assert created.status_code == 201, created.text
    async with shared.app.state.db.session() as session:
        await session.execute(text(f"SELECT setval('{SEQUENCE}', 9000)"))
        await session.execute(text("PREPARE left_prepared AS SELECT 1"))
    await scope.close()

    scope = RollbackScope(kit_shared_apps)
    await scope.take(shared)
    async with shared.app.state.db.session() as session:
        assert await session.scalar(text(f"SELECT last_value FROM {SEQUENCE}")) == before
        assert await session.scalar(text(
            "SELECT count(*) FROM pg_prepared_statements WHERE from_sql")) == 0
    await scope.close()


@pytest.mark.rollback_db
async def test_replaced_state_overrides_and_settings_are_put_back(
    kit_shared_apps: SharedApps, shared_app
) -> None:
    shared, scope, _ = await taken(kit_shared_apps, shared_app)
    app = shared.app
    providers, debug = app.state.providers, app.state.settings.debug
    app.state.providers = object()
    app.dependency_overrides[names] = lambda: None
    app.state.settings.debug = not debug
    await scope.close()
    assert app.state.providers is providers
    assert app.dependency_overrides == {}
    assert app.state.settings.debug is debug
    assert (await shared_app()) is shared  # put back, still shared


@pytest.mark.rollback_db
async def test_a_background_task_still_running_is_cancelled_and_named(
    kit_shared_apps: SharedApps, shared_app
) -> None:
    shared, scope, _ = await taken(kit_shared_apps, shared_app)

    async def poll_forever() -> None:
        while True:
            async with shared.app.state.db.session() as session:
                await session.execute(text("SELECT 1"))
            await asyncio.sleep(0.01)

    task = asyncio.create_task(poll_forever(), name="left-polling")
    await asyncio.sleep(0.05)
    with pytest.raises(RollbackTierError, match=r"left-polling \(.*poll_forever\)"):
        await scope.close()
    assert task.cancelled()


@pytest.mark.rollback_db
async def test_redis_keys_outside_the_prefix_and_subscriptions_go_with_the_test(
    kit_shared_apps: SharedApps, shared_app
) -> None:
    shared, scope, _ = await taken(kit_shared_apps, shared_app)
    client = shared.app.state.redis.client
    outside = f"outside-the-prefix:{id(shared)}"
    await client.set(outside, "left")
    await client.mset({f"{outside}:a": 1, f"{outside}:b": 2})
    listener = client.pubsub()
    await listener.subscribe(f"{outside}:channel")
    await scope.close()
    probe = kit_shared_apps.namespace.client()
    try:
        assert await probe.exists(outside, f"{outside}:a", f"{outside}:b") == 0
        assert await probe.pubsub_numsub(f"{outside}:channel") == [
            (f"{outside}:channel".encode(), 0)]
    finally:
        await probe.aclose()
    assert "execute_command" not in vars(client)  # recording stopped with the test
