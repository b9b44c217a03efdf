"""The rollback tier: started apps shared by one xdist worker's tests, each test inside a
transaction that the app's sessions join and that is rolled back after it.

What the tests of one worker share, per settings: the app object and everything on
`app.state` (registries, plugin managers, the event bus, metrics, the Redis client). After
each test the kit rolls the database back and undoes what a rollback does not: sequences go
back to their values (nextval and setval are not transactional), statements the test
PREPAREd are deallocated, the app's Redis keys (its queue's jobs included) are deleted, the
event subscriptions the test added are dropped, each `app.state` value, the dependency
overrides and the settings' values the test replaced are put back, and the readiness cache
is forgotten. What it cannot undo fails the test with the tier's error, naming it: commits by
other connections (rows inserted, updated or deleted: each table's row count and newest
xmin; tables created or altered: pg_class's), advisory locks (on the tests' connection, or
one the test opened and left open), and background tasks still running (cancelled). An app
a test changed in a way the kit cannot undo (a plugin disabled, a key added to `app.state`)
is stopped, and the next test gets a fresh one. Counters (metrics, readiness runs) only
grow: a test reads their change, not their value.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from fastapi import FastAPI
from pixsim7_testing.apps import AppFactory, RunningApp, start_app
from pixsim7_testing.inventory import Normalizer
from pixsim7_testing.isolation import IsolatedDatabase, RedisNamespace
from pixsim7_testing.leaks import (
    AppSnapshot,
    Observation,
    Observer,
    RedisLeaks,
    coroutine_name,
    reset,
)
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncTransaction

MARKER = "rollback_db"
USE_TEMPLATE = "use @pytest.mark.template_db (a database of the test's own) instead"
PLUGIN_MANAGERS = ("plugin_manager", "routes_manager", "middleware_manager")


class RollbackTierError(RuntimeError):
    """A test did what cannot work inside one rolled-back transaction."""


class SharedConnectionBusy(RollbackTierError):
    """A session waited too long for the connection the test's sessions share."""


class OneAtATime:
    """The sessions of one test, on its one connection, one task at a time (asyncpg runs one
    command per connection); sessions a task opens inside its own nest as savepoints."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._lock = asyncio.Lock()
        self._holder: asyncio.Task[Any] | None = None

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        task = asyncio.current_task()
        if task is not None and self._holder is task:
            yield
            return
        try:
            async with asyncio.timeout(self.timeout):
                await self._lock.acquire()
        except TimeoutError:
            raise SharedConnectionBusy(
                f"{MARKER}: the app's sessions in this test share one connection and run one "
                f"at a time; this one waited {self.timeout:g}s for another that never ended "
                f"(a request waiting on a concurrent one?); {USE_TEMPLATE}") from None
        self._holder = task
        try:
            yield
        finally:
            self._holder = None
            self._lock.release()


def settings_key(settings: Any, factory: AppFactory) -> str:
    """Two requests for an app share it when this text is equal."""
    values = settings.model_dump(mode="json")
    return json.dumps([f"{factory.__module__}.{factory.__qualname__}", values],
                      sort_keys=True, default=str)


def fingerprint(app: FastAPI) -> tuple[Any, ...]:
    """What a test may change on an app that the tier cannot undo: the app.state keys, each
    plugin's status, the routes and the middleware. Cheap enough to take after every test."""
    plugins = tuple(
        (name, pid, state.status) for name in PLUGIN_MANAGERS
        for pid, state in getattr(getattr(app.state, name, None), "plugins", {}).items())
    return (tuple(sorted(app.state)), plugins, len(app.router.routes), len(app.user_middleware))


class DatabaseSource(Protocol):
    """Where the tier's database comes from: a clone of the run's template, dropped after."""

    async def create(self) -> IsolatedDatabase: ...

    async def drop(self, database: IsolatedDatabase) -> None: ...


@dataclass
class SharedApp:
    """One started app of the tier and what it looked like when no test had run on it."""

    running: RunningApp
    baseline: tuple[Any, ...]  # its fingerprint() before any test
    subscriptions: tuple[Any, ...] = ()
    database: Observation | None = None  # what the database looked like before any test
    connection: AsyncConnection | None = None  # the tests' one, kept from test to test
    observer: Observer | None = None  # what it reads after each test (see leaks)

    async def release_connection(self) -> None:
        connection, self.connection = self.connection, None
        if connection is not None:
            await connection.close()

    @property
    def app(self) -> FastAPI:
        return self.running.app


class SharedApps:
    """The apps one worker's rollback tests share, started on first use, stopped at the end.

    Only apps on the tier's own database are shared; `database` and `namespace` are that
    database (a clone of the run's template) and the Redis prefix the apps use.
    """

    def __init__(self, databases: DatabaseSource, namespace: RedisNamespace, data_dir: Path,
                 normalizer: Normalizer, wait_timeout: float = 10.0, max_apps: int = 4) -> None:
        self.databases, self.namespace, self.data_dir = databases, namespace, data_dir
        self.database: IsolatedDatabase | None = None
        self.redis: Redis | None = None
        self.normalizer = normalizer
        self.wait_timeout, self.max_apps = wait_timeout, max_apps
        self._apps: dict[str, SharedApp] = {}
        self._settings: dict[str, Any] = {}
        self.loop = asyncio.get_running_loop()

    async def open(self) -> SharedApps:
        self.database = await self.databases.create()
        self.redis = self.namespace.client()  # the cleanup's, between tests
        return self

    async def renew(self) -> None:
        """Stop every app and give the worker a new database (the old one was written to)."""
        await self.drop()
        self.database = await self.databases.create()

    def settings(self, build: Callable[..., Any], **overrides: Any) -> Any:
        """`build(**overrides)`, made once per database and overrides and copied for each
        caller: building Settings reads the environment, about 10 ms a time."""
        key = json.dumps([self.database.name if self.database else None, overrides],
                         sort_keys=True, default=repr)
        if key not in self._settings:
            self._settings[key] = build(**overrides)
        return self._settings[key].model_copy()

    def shares(self, settings: Any) -> bool:
        return self.database is not None and (
            str(settings.database_url) == self.database.sqlalchemy_url)

    async def get(self, factory: AppFactory, settings: Any) -> SharedApp | RunningApp:
        """The shared app for these settings; a RunningApp whose startup failed is returned
        as it is (not kept)."""
        if asyncio.get_running_loop() is not self.loop:
            raise RollbackTierError(
                f"{MARKER}: shared apps live in the test session's event loop, and this test "
                "runs in a loop of its own; set asyncio_default_test_loop_scope = session and "
                "asyncio_default_fixture_loop_scope = session (pytest-asyncio)")
        key = settings_key(settings, factory)
        shared = self._apps.pop(key, None)
        if shared is not None and shared.running.running:
            self._apps[key] = shared  # the most recently used last
            return shared
        running = await start_app(factory, settings, self.normalizer)
        if not running.started:
            return running
        while len(self._apps) >= self.max_apps:
            await self.retire(next(iter(self._apps.values())))
        shared = SharedApp(running, fingerprint(running.app))
        self._apps[key] = shared
        return shared

    async def retire(self, shared: SharedApp) -> None:
        self._apps = {k: v for k, v in self._apps.items() if v is not shared}
        try:
            await shared.release_connection()
        finally:
            await shared.running.stop()

    async def close(self) -> None:
        """Stop every app, newest first; the database stays (until `drop()`)."""
        for shared in reversed(list(self._apps.values())):
            await self.retire(shared)

    async def drop(self) -> None:
        """Stop every app and drop the database; the Redis keys go too."""
        try:
            await self.close()
            await self.namespace.clear(self.redis)
        finally:
            database, self.database = self.database, None
            if database is not None:
                await self.databases.drop(database)

    async def shut(self) -> None:
        """`drop()`, and close the cleanup's Redis client: nothing of the tier is left."""
        try:
            await self.drop()
        finally:
            if self.redis is not None:
                await self.redis.aclose()
                self.redis = None


class RollbackScope:
    """One test of the tier: each shared app it takes is bound to a connection in a
    transaction of the test's own, undone with the rest of what the test left."""

    def __init__(self, apps: SharedApps) -> None:
        self.apps = apps
        self._bound: list[tuple[SharedApp, AsyncTransaction, AppSnapshot]] = []
        self._gate = OneAtATime(apps.wait_timeout)
        self._tasks: set[asyncio.Task[Any]] | None = None  # those running when it began
        self._redis: list[RedisLeaks] = []  # what each app's Redis client leaves, recorded

    async def take(self, shared: SharedApp) -> RunningApp:
        """A view of `shared` for this test: its own client; bound on first take."""
        if not any(entry[0] is shared for entry in self._bound):
            db = shared.app.state.db
            if shared.connection is None:
                shared.connection = await db.engine.connect()
            if shared.observer is None:
                shared.observer = Observer(shared.app.state.domain_registry.tables,
                                           shared.connection.dialect.identifier_preparer)
                raw = (await shared.connection.get_raw_connection()).driver_connection
                shared.database = await shared.observer.observe(raw)
            transaction = await shared.connection.begin()
            db.bind(shared.connection, gate=self._gate.hold)
            shared.subscriptions = shared.app.state.event_bus.saved()
            self._bound.append((shared, transaction, AppSnapshot.of(shared.app)))
            redis = getattr(shared.app.state, "redis", None)
            if redis is not None and redis.client is not None:
                self._redis.append(RedisLeaks(redis.client,
                                              shared.app.state.settings.redis_key_prefix).watch())
            if self._tasks is None:
                self._tasks = asyncio.all_tasks()
        return shared.running.view()

    async def close(self) -> None:
        """Undo every app's test: roll back, clear Redis, reset; raise what the test did that
        the tier cannot undo, after undoing the rest."""
        problems = await self._left_running()
        # The database and Redis are undone at once: one round trip each, side by side.
        redis = asyncio.ensure_future(self._clear_redis())
        try:
            for shared, transaction, snapshot in reversed(self._bound):
                problems += await self._undo(shared, transaction, snapshot)
        finally:
            self._bound.clear()
            await redis
        if problems:
            raise RollbackTierError(f"{MARKER}: " + "; ".join(problems) + f"; {USE_TEMPLATE}")

    async def _clear_redis(self) -> None:
        leaks, self._redis = self._redis, []
        for leak in leaks:
            await leak.undo(self.apps.redis)
        await self.apps.namespace.clear(self.apps.redis)

    async def _left_running(self) -> list[str]:
        """Tasks the test started that still run: cancelled, and named."""
        if self._tasks is None:
            return []
        current = asyncio.current_task()

        def running() -> list[asyncio.Task[Any]]:
            return [task for task in asyncio.all_tasks() - self._tasks
                    if task is not current and not task.done()]

        left = running()
        if left:
            await asyncio.sleep(0)  # what was about to end, ends
            left = running()
        self._tasks = None
        if not left:
            return []
        for task in left:
            task.cancel()
        await asyncio.gather(*left, return_exceptions=True)
        named = ", ".join(sorted(f"{task.get_name()} ({coroutine_name(task)})" for task in left))
        return [f"background task(s) still ran when the test ended (cancelled now; the next "
                f"test would have met them on its connection): {named}"]

    async def _undo(self, shared: SharedApp, transaction: AsyncTransaction,
                    snapshot: AppSnapshot) -> list[str]:
        problems: list[str] = []
        app = shared.app
        connection = shared.connection
        assert connection is not None and shared.database is not None
        if getattr(app.state, "db", None) is not None:
            app.state.db.bind(None)
        try:
            await transaction.rollback()
            raw = (await connection.get_raw_connection()).driver_connection
            seen = await shared.observer.observe(raw)
            if seen.own_locks:
                await connection.invalidate()  # its server session, and so its locks, end
            else:
                await reset(raw, shared.database, seen)
        except BaseException:
            await shared.release_connection()
            raise
        if seen.own_locks:
            await shared.release_connection()
            problems.append(
                f"the test took {seen.own_locks} session-level advisory lock(s), which outlive "
                "the rollback; in this tier every session is one connection, so locks never "
                "contend")
        left = shared.database.committed_since(seen)
        if left:
            await self.apps.renew()
            problems.append(
                f"{'; '.join(left)}, outside the test's transaction (by an app or a connection "
                "the test made itself); the kit made the worker a new database")
            return problems
        if not shared.running.running:
            await self.apps.retire(shared)  # the test stopped it
            return problems
        snapshot.restore(app)
        bus = getattr(app.state, "event_bus", None)
        if bus is not None:
            bus.restore(shared.subscriptions)
        readiness = getattr(app.state, "readiness", None)
        if readiness is not None:
            readiness.forget()
        if fingerprint(app) != shared.baseline:
            # Not an error: the next test simply gets an app of its own.
            await self.apps.retire(shared)
        return problems


def refuse(what: str) -> RollbackTierError:
    """The error for `what`, which a test of this tier cannot do."""
    return RollbackTierError(f"{MARKER}: {what}; {USE_TEMPLATE}")
