"""The template fast path: a clone of the run's migrated and seeded template, per test."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from pixsim7_testing.isolation import database_exists, drop_database
from pixsim7_testing.services import ServiceSet
from pixsim7_testing.template import TemplateDatabase, TemplateError, template_name

from pixsim7.backend.main.presets import DEFAULT_PRESETS
from tests.kit.test_isolation import run_inner

pytestmark = pytest.mark.integration

SEEDED = sorted(preset["name"] for preset in DEFAULT_PRESETS)


async def preset_names(running) -> list[str]:
    response = await running.get("/api/v1/presets")
    assert response.status_code == 200, response.text
    return sorted(preset["name"] for preset in response.json())


@pytest.mark.template_db
async def test_a_cloned_app_starts_on_the_seeded_schema_without_creating_it(app_factory) -> None:
    running = await app_factory()
    assert running.started, running.startup_error
    database = [m for m in running.milestones if m["step"] == "database"]
    assert database[0]["created"] == 0
    assert database[0]["tables"] == len(running.app.state.domain_registry.tables)
    seed = [m for m in running.milestones if m["step"] == "seed"]
    assert seed[0]["status"] == "skipped"  # the template holds the presets: nothing to read
    assert await preset_names(running) == SEEDED


@pytest.mark.template_db
async def test_two_clones_share_nothing(app_factory, make_settings, kit_services: ServiceSet,
                                        kit_template: TemplateDatabase) -> None:
    other = await kit_template.clone()
    try:
        first = await app_factory()
        second = await app_factory(make_settings(database_url=other.sqlalchemy_url))
        created = await first.client.post("/api/v1/presets", json={
            "name": "only-in-first", "provider_id": "pixverse", "operation": "text_to_video"})
        assert created.status_code == 201, created.text
        assert "only-in-first" in await preset_names(first)
        assert await preset_names(second) == SEEDED
        await second.stop()
    finally:
        await drop_database(other)


async def test_nobody_can_connect_to_the_template(kit_template: TemplateDatabase) -> None:
    with pytest.raises(asyncpg.ObjectNotInPrerequisiteStateError, match="not currently accepting"):
        await asyncpg.connect(kit_template.url, timeout=10)


@pytest.mark.template_db
async def test_what_a_test_writes_never_reaches_the_next_clone(
    test_database, kit_services: ServiceSet, kit_template: TemplateDatabase
) -> None:
    conn = await asyncpg.connect(test_database.url)
    try:
        await conn.execute("DELETE FROM generation_presets")
        await conn.execute("CREATE TABLE scratch (id int)")
    finally:
        await conn.close()
    fresh = await kit_template.clone()
    try:
        conn = await asyncpg.connect(fresh.url)
        try:
            names = sorted(await conn.fetchval("SELECT array_agg(name) FROM generation_presets"))
            assert names == SEEDED
            assert await conn.fetchval("SELECT to_regclass('scratch')") is None
        finally:
            await conn.close()
    finally:
        await drop_database(fresh)


async def test_an_unmarked_test_gets_an_empty_database(test_database) -> None:
    conn = await asyncpg.connect(test_database.url)
    try:
        assert await conn.fetchval("SELECT to_regclass('generation_presets')") is None
    finally:
        await conn.close()


# Two workers of one run, both asking for the template first, each test holding its clone
# while the other runs; then the run ends.
PARALLEL_TEMPLATE_TESTS = '''
import asyncio, os
import asyncpg
import pytest
import redis.asyncio as aioredis

pytestmark = pytest.mark.template_db
RUN = os.environ["KIT_RUN_ID"]

async def check(test_database, redis_namespace, kit_template, marker):
    conn = await asyncpg.connect(test_database.url)
    assert await conn.fetchval("SELECT count(*) FROM generation_presets") == 4
    await conn.execute("UPDATE generation_presets SET name = name || $1", marker)
    barrier = aioredis.Redis.from_url(redis_namespace.url)
    await barrier.incr(f"kit-barrier:{RUN}")
    await barrier.expire(f"kit-barrier:{RUN}", 60)
    for _ in range(300):
        if int(await barrier.get(f"kit-barrier:{RUN}")) >= 2:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the other test never ran alongside")
    names = [r["name"] for r in await conn.fetch("SELECT name FROM generation_presets")]
    assert all(name.endswith(marker) for name in names), names
    await barrier.aclose(); await conn.close()
    with open(f"report{marker}.txt", "w") as report:  # the inner run's cwd is its tmp_path
        report.write(f"template={kit_template.name} created={kit_template.created}")

async def test_left(test_database, redis_namespace, kit_template):
    await check(test_database, redis_namespace, kit_template, "-left")

async def test_right(test_database, redis_namespace, kit_template):
    await check(test_database, redis_namespace, kit_template, "-right")
'''


async def test_two_workers_make_the_template_once_and_the_run_drops_it(
    tmp_path, kit_services: ServiceSet
) -> None:
    run_id = f"kit{tmp_path.name[-12:]}"
    result = run_inner(tmp_path, kit_services, PARALLEL_TEMPLATE_TESTS,
                       "-n", "2", "--testrunuid", run_id)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout
    name = template_name(run_id)
    reports = sorted(path.read_text() for path in tmp_path.glob("report-*.txt"))
    assert reports == [f"template={name} created=False", f"template={name} created=True"]
    assert not await database_exists(kit_services.postgres, name)


def test_a_template_that_cannot_be_made_names_the_cause_and_leaves_nothing(
    kit_services: ServiceSet, monkeypatch, tmp_path
) -> None:
    name = template_name(f"broken{tmp_path.name[-10:]}")
    monkeypatch.setenv("DOMAIN_MODELS_DIR", str(tmp_path / "missing"))
    with pytest.raises(TemplateError, match=f"{name}: .*DOMAIN_MODELS_DIR"):
        TemplateDatabase(kit_services.postgres, name).acquire()
    assert not asyncio.run(database_exists(kit_services.postgres, name))
    # Its locks went with it: the next attempt makes the template and drops it at the end.
    monkeypatch.delenv("DOMAIN_MODELS_DIR")
    template = TemplateDatabase(kit_services.postgres, name).acquire()
    assert template.created
    template.release()
    assert not asyncio.run(database_exists(kit_services.postgres, name))
