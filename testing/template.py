"""A template database per test run: migrated and seeded once by the app's own startup steps.

Tests marked `template_db` get a `CREATE DATABASE ... TEMPLATE` clone of it instead of an empty
database, so their app starts with the schema and seed rows already in place. Every session
that uses the template (xdist workers included) holds a shared PostgreSQL advisory lock, its
"users" lock; creating and dropping happen under a second, exclusive lock, and a session drops
the template only when it can take the users lock exclusively, i.e. when it is the last user.
So the template is made once per run on each server and dropped by the last session.
"""

from __future__ import annotations

import hashlib

import asyncpg
from pixsim7_testing.endpoints import PostgresEndpoint
from pixsim7_testing.host import SyncRunner
from pixsim7_testing.isolation import (
    DatabaseJanitor,
    IsolatedDatabase,
    admin_connection,
    create_database,
    drop_database,
    stamp_owner,
)
from pixsim7_testing.ownership import database_prefix


class TemplateError(RuntimeError):
    """The template database could not be made; it has been dropped again."""


def template_name(run_id: str) -> str:
    """The template database of one test run (xdist workers of a run share the run id)."""
    safe = "".join(ch for ch in run_id.lower() if ch.isalnum())[:20]
    return f"{database_prefix()}tpl_{safe}"


def _lock_key(name: str, purpose: str) -> int:
    # A signed 64-bit key: pg_advisory_lock takes a bigint.
    digest = hashlib.sha256(f"{purpose}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


async def migrate_and_seed(url: str) -> None:
    """Run the app's domain registry, database (schema) and seed steps against `url`, with
    the settings the environment gives (DOMAIN_MODELS_DIR included)."""
    from pixsim7.backend.main.shared.config import Settings
    from pixsim7.backend.main.startup import (
        seed_presets,
        setup_database,
        setup_domain_registry,
        teardown_database,
    )

    settings = Settings(_env_file=None, database_url=url)
    registry = await setup_domain_registry(settings)
    db = await setup_database(settings, registry)
    try:
        await seed_presets(settings, db, registry)
    finally:
        await teardown_database(db)


class TemplateDatabase:
    """The run's template on one server: `acquire()` makes it (once) and marks this session as
    a user; `release()` lets go and drops it when no other session still uses it."""

    def __init__(self, endpoint: PostgresEndpoint, name: str) -> None:
        self.endpoint = endpoint
        self.name = name
        self.created = False  # whether this session made it
        self.clone_strategy: str | None = None
        self._change_key = _lock_key(name, "create-or-drop")
        self._users_key = _lock_key(name, "users")
        self._conn: asyncpg.Connection | None = None
        # The lock lives as long as its connection, so that connection needs a loop of its own
        # that outlasts each test's event loop.
        self._runner = SyncRunner()

    @property
    def url(self) -> str:
        return self.endpoint.url(self.name)

    async def clone(self, admin: asyncpg.Connection | None = None) -> IsolatedDatabase:
        """A new database with a unique name, a copy of the template."""
        return await create_database(self.endpoint, template=self.name,
                                     strategy=self.clone_strategy, admin=admin)

    def janitor(self, admin: asyncpg.Connection | None = None) -> DatabaseJanitor:
        """A clone's whole life as one context manager (see DatabaseJanitor)."""
        return DatabaseJanitor(self.endpoint, template=self.name, strategy=self.clone_strategy,
                               admin=admin)

    def acquire(self) -> TemplateDatabase:
        """Make the template unless it exists, and hold it until `release()`."""
        try:
            self._runner.run(self._acquire)
        except BaseException:
            self._runner.close()
            raise
        return self

    def release(self) -> None:
        """Drop the template if no other session holds it; safe to call twice."""
        try:
            if self._conn is not None:
                self._runner.run(self._release)
        finally:
            self._runner.close()

    async def _acquire(self) -> None:
        conn = await admin_connection(self.endpoint)
        try:
            await self._hold(conn)
        except BaseException:
            await conn.close()  # which releases every advisory lock it holds
            raise
        self._conn = conn

    async def _hold(self, conn: asyncpg.Connection) -> None:
        # FILE_COPY copies the files after a checkpoint: a few ms faster than the default
        # WAL_LOG for a small database when fsync is off (test servers), far slower when on.
        fsync_off = await conn.fetchval("SELECT current_setting('fsync')") == "off"
        if fsync_off and conn.get_server_version().major >= 15:
            self.clone_strategy = "FILE_COPY"
        await conn.execute("SELECT pg_advisory_lock($1)", self._change_key)
        try:
            if not await _exists(conn, self.name):
                await self._create(conn)
                self.created = True
            # Held until release(): while any session holds it, nobody drops the template.
            await conn.execute("SELECT pg_advisory_lock_shared($1)", self._users_key)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", self._change_key)

    async def _create(self, conn: asyncpg.Connection) -> None:
        await conn.execute(f'CREATE DATABASE "{self.name}"')
        await stamp_owner(conn, self.name)
        try:
            try:
                await migrate_and_seed(self.endpoint.url(self.name, driver="asyncpg"))
            except Exception as exc:
                raise TemplateError(
                    f"template database {self.name}: the app's schema and seed steps failed: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            # No connection can reach it from now on: nothing can change it, and a clone is
            # never refused because someone is connected to its source.
            await conn.execute(
                f'ALTER DATABASE "{self.name}" WITH ALLOW_CONNECTIONS false IS_TEMPLATE true')
            await conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                               "WHERE datname = $1", self.name)
        except BaseException:
            await _drop(conn, self.name)
            raise

    async def _release(self) -> None:
        conn, self._conn = self._conn, None
        assert conn is not None
        try:
            await conn.execute("SELECT pg_advisory_unlock_shared($1)", self._users_key)
            await conn.execute("SELECT pg_advisory_lock($1)", self._change_key)
            if await conn.fetchval("SELECT pg_try_advisory_lock($1)", self._users_key):
                await _drop(conn, self.name)
        finally:
            await conn.close()


async def _exists(conn: asyncpg.Connection, name: str) -> bool:
    return bool(await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name))


async def _drop(conn: asyncpg.Connection, name: str) -> None:
    if await _exists(conn, name):
        await conn.execute(f'ALTER DATABASE "{name}" WITH IS_TEMPLATE false')
        await conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


class TemplateClones:
    """Clones of a template through one admin connection: the rollback tier's databases."""

    def __init__(self, template: TemplateDatabase, admin: asyncpg.Connection) -> None:
        self.template, self.admin = template, admin

    async def create(self) -> IsolatedDatabase:
        return await self.template.clone(self.admin)

    async def drop(self, database: IsolatedDatabase) -> None:
        await drop_database(database, self.admin)
