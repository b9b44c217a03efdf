"""The pool of databases made ahead, on the run's real PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import time
import uuid

import asyncpg
import pytest
from pixsim7_testing.isolation import database_exists
from pixsim7_testing.ownership import owner_comment
from pixsim7_testing.pool import ENV_POOL_SIZE, DatabasePool, pool_size
from pixsim7_testing.services import ServiceSet
from pixsim7_testing.template import TemplateDatabase

pytestmark = pytest.mark.integration


async def _until(condition, seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while not await condition():
        assert time.monotonic() < deadline, "not within the time allowed"
        await asyncio.sleep(0.02)


async def _comment(services: ServiceSet, name: str) -> str | None:
    conn = await asyncpg.connect(services.postgres.url())
    try:
        return await conn.fetchval(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1",
            name)
    finally:
        await conn.close()


async def test_a_pool_keeps_clones_ready_and_a_taken_one_is_the_templates_stamped_and_its_own(
    kit_services: ServiceSet, kit_template: TemplateDatabase
) -> None:
    pool = DatabasePool(kit_services.postgres, template=kit_template.name,
                        strategy=kit_template.clone_strategy, size=2)
    try:
        async def two_ready() -> bool:
            return pool.made == 2
        await _until(two_ready)
        first, second = await pool.take(), await pool.take()
        assert first.name != second.name
        assert await _comment(kit_services, first.name) == owner_comment()
        conn = await asyncpg.connect(first.url)
        try:  # the template's schema and seed rows
            assert await conn.fetchval("SELECT count(*) FROM generation_presets") > 0
            await conn.execute("DELETE FROM generation_presets")
        finally:
            await conn.close()
        conn = await asyncpg.connect(second.url)
        try:  # what one test does to its clone, the other's does not see
            assert await conn.fetchval("SELECT count(*) FROM generation_presets") > 0
        finally:
            await conn.close()

        async def refilled() -> bool:
            return pool.made == 4
        await _until(refilled)  # two taken, two more made ahead

        started = time.perf_counter()
        pool.give_back(first)
        assert time.perf_counter() - started < 0.05  # the drop is not on the caller's path

        async def first_dropped() -> bool:
            return not await database_exists(kit_services.postgres, first.name)
        await _until(first_dropped)
        pool.give_back(second)
    finally:
        pool.close()
    assert pool.dropped == pool.made == 4
    for name in (first.name, second.name):
        assert not await database_exists(kit_services.postgres, name)


async def test_takers_beyond_its_size_each_get_a_database_of_their_own(
    kit_services: ServiceSet,
) -> None:
    pool = DatabasePool(kit_services.postgres, size=1)
    try:
        taken = await asyncio.gather(*(pool.take() for _ in range(4)))
        assert len({database.name for database in taken}) == 4
        conn = await asyncpg.connect(taken[0].url)
        try:  # empty: the public schema holds nothing
            assert await conn.fetchval(
                "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace") == 0
        finally:
            await conn.close()
        for database in taken:
            pool.give_back(database)
    finally:
        pool.close()
    assert pool.dropped == pool.made >= 4
    for database in taken:
        assert not await database_exists(kit_services.postgres, database.name)


async def test_a_pool_that_cannot_make_databases_says_why_to_its_taker_and_does_not_spin(
    kit_services: ServiceSet,
) -> None:
    pool = DatabasePool(kit_services.postgres, template="pixsim7_no_such_template", size=2)
    try:
        with pytest.raises(asyncpg.InvalidCatalogNameError, match="pixsim7_no_such_template"):
            await pool.take()
        await asyncio.sleep(0.3)
        failed = pool.failed
        await asyncio.sleep(0.3)
        # One attempt at the start and one after each take, none in between.
        assert pool.failed == failed <= 2
        with pytest.raises(asyncpg.InvalidCatalogNameError):
            await pool.take()
    finally:
        pool.close()


def test_the_pool_size_setting_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_POOL_SIZE, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert pool_size(workers=1) == 2  # auto: a core is left over
    assert pool_size(workers=2) == 0  # auto: every core runs tests
    monkeypatch.setenv(ENV_POOL_SIZE, "3")
    assert pool_size(workers=2) == 3
    monkeypatch.setenv(ENV_POOL_SIZE, "0")
    assert pool_size() == 0
    for bad in ("-1", "two", "99"):
        monkeypatch.setenv(ENV_POOL_SIZE, bad)
        with pytest.raises(ValueError, match=f"{ENV_POOL_SIZE}='{bad}': use `auto` or"):
            pool_size()


async def test_reaping_drops_a_kit_named_database_left_unstamped_unless_someone_uses_it(
    kit_services: ServiceSet,
) -> None:
    # A session killed between CREATE DATABASE and its stamp leaves a database with no owner.
    from pixsim7_testing.ownership import reap_databases

    prefix = "reap" + uuid.uuid4().hex[:6] + "_"
    admin = await asyncpg.connect(kit_services.postgres.url())
    names = {kind: f"{prefix}{kind}_{uuid.uuid4().hex[:8]}" for kind in ("t", "tpl", "other")}
    names["used"] = f"{prefix}t_{uuid.uuid4().hex[:8]}"
    try:
        for name in names.values():
            await admin.execute(f'CREATE DATABASE "{name}"')
        user = await asyncpg.connect(kit_services.postgres.url(names["used"]))
        try:
            dropped = await reap_databases(admin, prefix)
        finally:
            await user.close()
        assert sorted(dropped) == sorted([names["t"], names["tpl"]])
        for kind in ("other", "used"):  # not named as the kit names them; in use
            assert await database_exists(kit_services.postgres, names[kind])
    finally:
        for name in names.values():
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
