"""Databases made ahead: a few of one kind (clones of the run's template, or empty ones) kept
ready by a thread of their own, so that a test takes one instead of waiting for CREATE
DATABASE, and gives it back to be dropped off its path.

One pool per kind per process (an xdist worker is a process): a worker's tests take from its
own pools, with no coordination between processes, and each worker drops what it made when
it ends. A worker killed on the way leaves its databases stamped with its owner (see
ownership), and the next run drops them as it drops every dead session's.

Each database is made with `CREATE DATABASE`, stamped, and connected to once: the first
connection to a new database writes its relation cache file (`pg_internal.init`), which every
later connection reads instead of building that cache again (about 4 ms saved on the app's
first connection, embedded). `PIXSIM7_TEST_DATABASE_POOL` sets how many each pool keeps ready
(`auto`, the default: 2 when a core is left over by the run's xdist workers, else 0; 0 makes
each database on the test's path and drops it there).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import asyncpg
from pixsim7_testing.endpoints import PostgresEndpoint
from pixsim7_testing.isolation import (
    IsolatedDatabase,
    admin_connection,
    create_database,
    drop_database,
)

ENV_POOL_SIZE = "PIXSIM7_TEST_DATABASE_POOL"
DEFAULT_POOL_SIZE = 2
MAX_POOL_SIZE = 16
T = TypeVar("T")
logger = logging.getLogger("pixsim7.testing")


def pool_size(workers: int = 1) -> int:
    """How many databases each pool keeps ready: PIXSIM7_TEST_DATABASE_POOL, a number, or
    `auto` (the default): 2 when the machine has a core more than the run's `workers`
    (xdist's, or 1), else 0. A pool's work is not free: it pays when a core would otherwise
    wait; with every core running tests it only competes with them (measured: the suite 8%
    slower with `-n 2` on 2 cores)."""
    text = os.environ.get(ENV_POOL_SIZE, "").strip().lower() or "auto"
    if text == "auto":
        return DEFAULT_POOL_SIZE if (os.cpu_count() or 1) > workers else 0
    if not text.isdigit() or int(text) > MAX_POOL_SIZE:
        raise ValueError(f"{ENV_POOL_SIZE}={text!r}: use `auto` or a whole number from 0 to "
                         f"{MAX_POOL_SIZE} (databases kept ready per pool and xdist worker)")
    return int(text)


async def warm(database: IsolatedDatabase) -> None:
    """Connect to `database` once, so that its relation cache file is written."""
    conn = await asyncpg.connect(database.url, timeout=10)
    try:
        await conn.fetchval("SELECT 1")
    finally:
        await conn.close()


class DatabasePool:
    """Databases of one kind (`template`'s clones, or empty ones when it is None), `size`
    of them kept ready by a thread of the pool's own; `take()` one, `give_back()` it after
    the test, `close()` at the end drops every database the pool still has."""

    def __init__(self, endpoint: PostgresEndpoint, *, template: str | None = None,
                 strategy: str | None = None, size: int = DEFAULT_POOL_SIZE) -> None:
        self.endpoint, self.template, self.strategy = endpoint, template, strategy
        self.size = size
        self.made = self.dropped = self.failed = 0  # counts, for summaries and tests
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name=f"pixsim7-kit-pool-{template or 'empty'}")
        self._thread.start()
        self._ready: collections.deque[IsolatedDatabase] = collections.deque()
        self._used: list[IsolatedDatabase] = []  # given back, to drop
        self._takers: list[asyncio.Future[IsolatedDatabase]] = []  # waiting: none was ready
        self._wake: asyncio.Event | None = None
        self._failure: BaseException | None = None  # the last make's, for the next taker
        self._admin: asyncpg.Connection | None = None
        self._worker: asyncio.Task[None] | None = None
        self._closed = self._stopping = False
        self._call(self._open())

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    async def take(self) -> IsolatedDatabase:
        """A database of the pool's kind, ready: one made ahead, or one made now."""
        if self._closed:
            raise RuntimeError("the database pool is closed")
        try:  # one made ahead: no hop to the pool's thread (a deque's popleft is atomic)
            database = self._ready.popleft()
        except IndexError:
            future = asyncio.run_coroutine_threadsafe(self._take(), self._loop)
            return await asyncio.wrap_future(future)
        self._loop.call_soon_threadsafe(self._wake_up)  # make the next
        return database

    def give_back(self, database: IsolatedDatabase) -> None:
        """Drop `database` on the pool's thread, off the test's path."""
        self._loop.call_soon_threadsafe(self._queue_drop, database)

    def close(self) -> None:
        """Stop making databases and drop every one the pool made that was not dropped yet;
        safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            self._call(self._close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)
            self._loop.close()

    # On the pool's thread.

    async def _open(self) -> None:
        self._wake = asyncio.Event()
        self._admin = await admin_connection(self.endpoint)
        self._worker = asyncio.create_task(self._work(), name="pixsim7-kit-pool")

    def _wake_up(self) -> None:
        assert self._wake is not None
        self._wake.set()

    async def _take(self) -> IsolatedDatabase:
        self._wake_up()  # one fewer ready, or a taker waiting: make the next
        if self._ready:
            return self._ready.popleft()
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure
        taker: asyncio.Future[IsolatedDatabase] = asyncio.get_running_loop().create_future()
        self._takers.append(taker)
        return await taker

    def _queue_drop(self, database: IsolatedDatabase) -> None:
        assert self._wake is not None
        self._used.append(database)
        self._wake.set()

    async def _work(self) -> None:
        """Make databases while fewer than `size` are ready or a taker waits; else drop the
        used ones; else sleep until woken. A failure to make one goes to the takers waiting,
        or to the next one, and is not retried before that."""
        assert self._wake is not None
        while not self._stopping:
            self._wake.clear()
            self._takers = [taker for taker in self._takers if not taker.done()]
            if self._takers or (len(self._ready) < self.size and self._failure is None):
                try:
                    database = await self._make()
                except Exception as exc:
                    self._hand_failure(exc)
                    continue
                self._hand(database)
                continue
            if self._used:
                database = self._used.pop(0)
                try:
                    await drop_database(database, self._admin)
                except Exception as exc:  # it keeps its owner stamp: the next run drops it
                    logger.warning("could not drop %s: %s: %s", database.name,
                                   type(exc).__name__, exc)
                else:
                    self.dropped += 1
                continue
            await self._wake.wait()

    def _hand(self, database: IsolatedDatabase) -> None:
        while self._takers:
            taker = self._takers.pop(0)
            if not taker.done():
                taker.set_result(database)
                return
        self._ready.append(database)

    def _hand_failure(self, exc: BaseException) -> None:
        self.failed += 1
        takers, self._takers = self._takers, []
        waiting = [taker for taker in takers if not taker.done()]
        for taker in waiting:
            taker.set_exception(exc)
        if not waiting:
            self._failure = exc

    async def _make(self) -> IsolatedDatabase:
        try:
            database = await create_database(self.endpoint, template=self.template,
                                             strategy=self.strategy, admin=self._admin)
        except asyncpg.InvalidCatalogNameError:
            # Gone before its stamp: another run's reaping takes a kit-named database with no
            # stamp for a killed session's. Made once more (a missing template fails again).
            database = await create_database(self.endpoint, template=self.template,
                                             strategy=self.strategy, admin=self._admin)
        self.made += 1
        try:
            await warm(database)
        except BaseException:
            await drop_database(database, self._admin)
            self.dropped += 1
            raise
        return database

    async def _close(self) -> None:
        # The worker ends its current CREATE or DROP (cancelled, a made database could be lost
        # before anyone knew its name) and stops.
        self._stopping = True
        if self._wake is not None:
            self._wake.set()
        if self._worker is not None:
            await asyncio.gather(self._worker, return_exceptions=True)
        for taker in self._takers:
            if not taker.done():
                taker.set_exception(RuntimeError("the database pool was closed"))
        left = self._used + list(self._ready)
        self._used = []
        self._ready.clear()
        try:
            for database in left:
                await drop_database(database, self._admin)
                self.dropped += 1
        finally:
            if self._admin is not None:
                await self._admin.close()
                self._admin = None
