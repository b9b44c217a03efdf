"""Database handle: URL handling, schema creation under concurrency, seeding, bounded pings.

Servers come from the testing kit (`test_database`, `kit_services`, `fault_proxy`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Annotated

import asyncpg
import httpx
import pytest
from fastapi import Depends, FastAPI
from pixsim7_testing.isolation import IsolatedDatabase
from pixsim7_testing.polling import wait_until_async
from pixsim7_testing.proxy import FaultProxy
from pixsim7_testing.services import ServiceSet
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from pixsim7.backend.main.infrastructure.adapters.database import (
    Database,
    DatabaseConfigError,
    get_session,
    parse_database_url,
)
from pixsim7.backend.main.infrastructure.adapters.embedded import free_port
from pixsim7.backend.main.infrastructure.discovery.domain_registry import (
    DomainModelRegistry,
    init_domain_registry,
)
from pixsim7.backend.main.presets import (
    DEFAULT_PRESETS,
    seed_default_presets,
)
from pixsim7.backend.main.shared.config import PACKAGE_DIR

pytestmark = pytest.mark.integration

MakeProxy = Callable[[str], FaultProxy]


@pytest.fixture
def registry() -> DomainModelRegistry:
    return init_domain_registry(PACKAGE_DIR / "domain_models")


def test_plain_postgresql_url_is_normalised_to_asyncpg() -> None:
    url = parse_database_url("postgresql://app:s3cret@db.internal:5433/pixsim")
    assert url.drivername == "postgresql+asyncpg"
    assert url.password == "s3cret"


def test_safe_url_masks_the_password() -> None:
    db = Database("postgresql://postgres:s3cret@127.0.0.1:5432/db?password=again")
    try:
        assert db.safe_url.startswith("postgresql+asyncpg://postgres:***@127.0.0.1:5432/db")
        assert "s3cret" not in db.safe_url and "again" not in db.safe_url
        assert "s3cret" not in repr(db)
    finally:
        db.engine.sync_engine.dispose()


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("", "DATABASE_URL is empty"),
        ("not a url at all s3cret", "DATABASE_URL is not a valid database URL"),
        ("postgresql://user:s3cret@host:port/db", "DATABASE_URL is not a valid database URL"),
        ("mysql://user:s3cret@host/db", "DATABASE_URL uses the scheme 'mysql'"),
        ("postgresql+psycopg2://user:s3cret@host/db", "scheme 'postgresql\\+psycopg2'"),
        ("sqlite:///tmp/s3cret.db", "needs PostgreSQL"),
    ],
)
def test_bad_urls_name_database_url_without_the_password(url: str, problem: str) -> None:
    with pytest.raises(DatabaseConfigError, match=problem) as info:
        Database(url)
    assert "s3cret" not in str(info.value)
    assert info.value.__suppress_context__ or info.value.__context__ is None


def test_non_positive_timeout_is_a_config_error() -> None:
    with pytest.raises(DatabaseConfigError, match="DATABASE_CONNECT_TIMEOUT"):
        Database("postgresql://postgres@127.0.0.1/db", connect_timeout=0)


async def test_create_schema_then_nothing_left_to_create(
    test_database: IsolatedDatabase, registry: DomainModelRegistry
) -> None:
    db = Database(test_database.sqlalchemy_url)
    try:
        await db.ping(timeout=5)
        created = await db.create_schema(registry.tables)
        assert created == registry.table_names()
        assert await db.create_schema(registry.tables) == []

        preset = registry.model("GenerationPreset")
        assert await seed_default_presets(db, preset) == len(DEFAULT_PRESETS)
        assert await seed_default_presets(db, preset) == 0
        async with db.session() as session:
            rows = (await session.execute(select(preset).order_by(preset.name))).scalars().all()
        assert sorted(p["name"] for p in DEFAULT_PRESETS) == [row.name for row in rows]
        assert all(row.created_at is not None and row.params for row in rows)
    finally:
        await db.dispose()


async def test_create_schema_only_creates_what_is_missing(
    test_database: IsolatedDatabase, registry: DomainModelRegistry
) -> None:
    db = Database(test_database.sqlalchemy_url)
    try:
        core_tables = [m.__table__ for m in registry.packages["core"].models]
        assert await db.create_schema(core_tables) == ["users", "assets", "generation_presets"]
        assert await db.create_schema(registry.tables) == ["worlds", "game_sessions"]
    finally:
        await db.dispose()


async def test_concurrent_replicas_create_and_seed_once(
    test_database: IsolatedDatabase, registry: DomainModelRegistry
) -> None:
    replicas = [Database(test_database.sqlalchemy_url) for _ in range(4)]
    preset = registry.model("GenerationPreset")

    async def start(db: Database) -> tuple[list[str], int]:
        created = await db.create_schema(registry.tables)
        return created, await seed_default_presets(db, preset)

    try:
        results = await asyncio.gather(*(start(db) for db in replicas))
    finally:
        await asyncio.gather(*(db.dispose() for db in replicas))

    created_everywhere = sorted(name for created, _ in results for name in created)
    assert created_everywhere == sorted(registry.table_names())
    assert sum(inserted for _, inserted in results) == len(DEFAULT_PRESETS)

    check = Database(test_database.sqlalchemy_url)
    try:
        async with check.session() as session:
            count = await session.scalar(select(func.count()).select_from(preset))
            names = (await session.execute(select(preset.name))).scalars().all()
        assert count == len(DEFAULT_PRESETS)
        assert len(set(names)) == len(names)
    finally:
        await check.dispose()


async def test_seed_needs_a_unique_name_column(test_database: IsolatedDatabase) -> None:
    db = Database(test_database.sqlalchemy_url)
    try:
        with pytest.raises(TypeError, match="not a mapped table model"):
            await seed_default_presets(db, dict)
    finally:
        await db.dispose()


async def test_ping_against_a_closed_port_fails_fast() -> None:
    db = Database(f"postgresql://postgres@127.0.0.1:{free_port()}/postgres", connect_timeout=30)
    try:
        started = time.monotonic()
        with pytest.raises((OSError, TimeoutError)):
            await db.ping(timeout=1.0)
        assert time.monotonic() - started < 1.5
    finally:
        await db.dispose()


async def test_ping_is_bounded_when_the_server_accepts_but_never_answers(
    kit_services: ServiceSet, fault_proxy: MakeProxy
) -> None:
    proxy = fault_proxy("postgres")
    proxy.blackhole()
    # A long connect timeout proves the ping's own bound is what stops the wait.
    db = Database(proxy.rewrite_url(kit_services.postgres.url()), connect_timeout=30)
    try:
        started = time.monotonic()
        with pytest.raises(TimeoutError, match="did not answer within 0.5s"):
            await db.ping(timeout=0.5)
        assert time.monotonic() - started < 1.0
    finally:
        started = time.monotonic()
        await db.dispose()
        assert time.monotonic() - started < 3.0


async def test_connect_timeout_bounds_a_silent_server_for_sessions(
    kit_services: ServiceSet, fault_proxy: MakeProxy
) -> None:
    proxy = fault_proxy("postgres")
    proxy.blackhole()
    db = Database(proxy.rewrite_url(kit_services.postgres.url()), connect_timeout=0.5)
    try:
        started = time.monotonic()
        with pytest.raises((TimeoutError, OSError)):
            async with db.engine.connect():
                pass
        assert time.monotonic() - started < 2.0
    finally:
        await db.dispose()


async def test_a_hung_pooled_connection_is_not_reused(
    test_database: IsolatedDatabase, fault_proxy: MakeProxy
) -> None:
    proxy = fault_proxy("postgres")
    db = Database(proxy.rewrite_url(test_database.url), connect_timeout=5)
    try:
        await db.ping(timeout=5)
        assert db.engine.pool.checkedin() == 1

        proxy.blackhole()
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await db.ping(timeout=0.5)
        assert time.monotonic() - started < 1.0

        # While the proxy is still silent only the client can end the hung connection (the
        # proxy closes the server side once the client leaves); restore() would close it
        # anyway, so this is checked before it.
        await _wait_for_backends(test_database, 0)

        proxy.restore()
        await db.ping(timeout=5)
        # The server holds just the fresh connection: the silent one was closed, not parked
        # in the pool for reuse.
        await _wait_for_backends(test_database, 1)
        assert db.engine.pool.checkedout() == 0
        await db.ping(timeout=2)
    finally:
        await db.dispose()


async def _wait_for_backends(database: IsolatedDatabase, expected: int) -> None:
    """Poll (up to 5s) until the server has `expected` connections to the database."""
    async def reached() -> bool:
        return await _backend_count(database) == expected

    await wait_until_async(reached, timeout=5.0,
                           message=f"{expected} server connection(s) to {database.name}")


async def _backend_count(database: IsolatedDatabase) -> int:
    conn = await asyncpg.connect(database.endpoint.url(), timeout=5)
    try:
        return await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1", database.name
        )
    finally:
        await conn.close()


async def test_fixture_database_is_empty(test_database: IsolatedDatabase) -> None:
    conn = await asyncpg.connect(test_database.url, timeout=5)
    try:
        tables = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    finally:
        await conn.close()
    assert tables == []


async def test_get_session_dependency(test_database: IsolatedDatabase) -> None:
    app = FastAPI()

    @app.get("/one")
    async def one(session: Annotated[AsyncSession, Depends(get_session)]) -> dict[str, int]:
        return {"value": await session.scalar(text("SELECT 1"))}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/one")
        assert response.status_code == 503
        assert "DATABASE_URL" in response.json()["detail"]

        app.state.db = Database(test_database.sqlalchemy_url)
        try:
            response = await client.get("/one")
            assert response.status_code == 200
            assert response.json() == {"value": 1}
        finally:
            await app.state.db.dispose()
