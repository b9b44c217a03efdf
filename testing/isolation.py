"""A database and a Redis keyspace of its own for each test; both gone after it."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import asyncpg
import redis.asyncio as aioredis
from pixsim7_testing.endpoints import PostgresEndpoint, RedisEndpoint
from pixsim7_testing.host import run_sync
from pixsim7_testing.ownership import database_prefix, owner_comment

from pixsim7.backend.main.infrastructure.adapters.redis import client_identity


def unique_suffix() -> str:
    """Unique across xdist workers and test sessions running at once."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    return f"{worker}_{uuid.uuid4().hex[:10]}"


@dataclass(frozen=True)
class IsolatedDatabase:
    name: str
    endpoint: PostgresEndpoint

    @property
    def url(self) -> str:
        """Plain `postgresql://` URL (asyncpg's form)."""
        return self.endpoint.url(self.name)

    @property
    def sqlalchemy_url(self) -> str:
        return self.endpoint.url(self.name, driver="asyncpg")


async def server_offers_ssl(endpoint: PostgresEndpoint) -> bool:
    """Whether the server accepts SSL connections (its `ssl` setting)."""
    conn = await admin_connection(endpoint)
    try:
        return await conn.fetchval("SHOW ssl") == "on"
    finally:
        await conn.close()


@contextlib.contextmanager
def ssl_negotiation_skipped(endpoint: PostgresEndpoint) -> Iterator[None]:
    """PGSSLMODE=disable for the block when the server has no SSL and PGSSLMODE is unset.

    asyncpg's default sslmode, prefer, builds an OpenSSL context for every connection (about
    3 ms) before the server answers that it has no SSL, as most test servers do. libpq's own
    variable tells asyncpg, in this process and in backend subprocesses, not to ask.
    """
    if "PGSSLMODE" in os.environ or run_sync(lambda: server_offers_ssl(endpoint)):
        yield
        return
    os.environ["PGSSLMODE"] = "disable"
    try:
        yield
    finally:
        os.environ.pop("PGSSLMODE", None)


async def admin_connection(endpoint: PostgresEndpoint) -> asyncpg.Connection:
    """A connection to the server's admin database, for creating and dropping databases."""
    return await asyncpg.connect(endpoint.url(), timeout=10)


async def create_database(endpoint: PostgresEndpoint, name: str | None = None, *,
                          template: str | None = None, strategy: str | None = None,
                          admin: asyncpg.Connection | None = None) -> IsolatedDatabase:
    """CREATE DATABASE with a unique name on the session's server, empty or as a copy of
    `template` (with `STRATEGY strategy` if given); through `admin` if given, else through a
    connection of its own."""
    name = name or f"{database_prefix()}t_{unique_suffix()}"
    statement = f'CREATE DATABASE "{name}"'
    if template is not None:
        statement += f' TEMPLATE "{template}"'
    if strategy is not None:
        statement += f" STRATEGY {strategy}"
    conn = admin or await admin_connection(endpoint)
    try:
        await conn.execute(statement)
        await stamp_owner(conn, name)
    finally:
        if admin is None:
            await conn.close()
    return IsolatedDatabase(name, endpoint)


async def stamp_owner(conn: asyncpg.Connection, name: str) -> None:
    """Mark database `name` as this session's, for the next run to drop should it die."""
    comment = owner_comment().replace("'", "''")
    await conn.execute(f'COMMENT ON DATABASE "{name}" IS \'{comment}\'')


async def drop_database(database: IsolatedDatabase,
                        admin: asyncpg.Connection | None = None) -> None:
    """DROP DATABASE, closing any connection a test left open."""
    conn = admin or await admin_connection(database.endpoint)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{database.name}" WITH (FORCE)')
    finally:
        if admin is None:
            await conn.close()


class DatabaseJanitor:
    """One database's whole life: `async with DatabaseJanitor(endpoint) as database:` creates
    it (empty, or a copy of `template` with `STRATEGY strategy`) and drops it on the way out,
    also after a failure, closing connections a test left open. Both ends go through `admin`
    if given, else through one admin connection of its own (a connection costs as much as a
    CREATE DATABASE)."""

    def __init__(self, endpoint: PostgresEndpoint, *, template: str | None = None,
                 strategy: str | None = None, admin: asyncpg.Connection | None = None) -> None:
        self.endpoint, self.template, self.strategy = endpoint, template, strategy
        self._admin, self._own_admin = admin, admin is None
        self.database: IsolatedDatabase | None = None

    async def __aenter__(self) -> IsolatedDatabase:
        if self._admin is None:
            self._admin = await admin_connection(self.endpoint)
        try:
            self.database = await create_database(self.endpoint, template=self.template,
                                                  strategy=self.strategy, admin=self._admin)
        except BaseException:
            await self._close_admin()
            raise
        return self.database

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            if self.database is not None:
                await drop_database(self.database, self._admin)
        finally:
            self.database = None
            await self._close_admin()

    async def _close_admin(self) -> None:
        if self._own_admin and self._admin is not None:
            await self._admin.close()
            self._admin = None


async def database_exists(endpoint: PostgresEndpoint, name: str) -> bool:
    conn = await asyncpg.connect(endpoint.url(), timeout=10)
    try:
        return bool(await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name))
    finally:
        await conn.close()


# Keys arq keeps per job outside the queue's name (and so outside a prefix).
ARQ_JOB_KEYS = ("arq:job:", "arq:result:", "arq:in-progress:", "arq:retry:")
# ARGV: the prefix, then ARQ_JOB_KEYS. Every key under the prefix; for each job a queue under it
# holds, arq's keys of that job (arq keeps them outside the queue's name); and the results of
# jobs that ended, which left the queue: arq's result record names its queue, so a result
# whose record holds the prefix (unique to the namespace) is one of its jobs'.
_CLEAR_SCRIPT = """
local cursor, removed = "0", 0
repeat
  local found = redis.call("SCAN", cursor, "MATCH", ARGV[1] .. "*", "COUNT", 1000)
  cursor = found[1]
  for _, key in ipairs(found[2]) do
    if string.sub(key, -9) == "arq:queue" and redis.call("TYPE", key).ok == "zset" then
      for _, job in ipairs(redis.call("ZRANGE", key, 0, -1)) do
        for i = 2, #ARGV do redis.call("UNLINK", ARGV[i] .. job) end
      end
    end
    removed = removed + redis.call("UNLINK", key)
  end
until cursor == "0"
repeat
  local found = redis.call("SCAN", cursor, "MATCH", ARGV[3] .. "*", "COUNT", 1000)  -- arq:result:
  cursor = found[1]
  for _, key in ipairs(found[2]) do
    local record = redis.pcall("GET", key)
    if type(record) == "string" and string.find(record, ARGV[1], 1, true) then
      redis.call("UNLINK", key)
    end
  end
until cursor == "0"
return removed
"""


@dataclass(frozen=True)
class RedisNamespace:
    """A key prefix on the session's Redis; every key the test writes starts with it."""

    endpoint: RedisEndpoint
    prefix: str

    @property
    def url(self) -> str:
        return self.endpoint.url()

    def client(self, **kwargs) -> aioredis.Redis:
        return aioredis.Redis.from_url(self.url, **{**client_identity(), **kwargs})

    async def keys(self) -> list[bytes]:
        client = self.client()
        try:
            return [key async for key in client.scan_iter(match=f"{self.prefix}*", count=500)]
        finally:
            await client.aclose()

    async def clear(self, client: aioredis.Redis | None = None) -> int:
        """Delete every key under the prefix, arq's per-job keys of the jobs a queue under it
        holds, and the results of its jobs that ended (arq keeps those outside the queue's
        name), in one round trip; through `client` if given. How many keys under the prefix
        went."""
        own = client is None
        client = self.client() if client is None else client
        try:
            return int(await client.eval(_CLEAR_SCRIPT, 0, self.prefix, *ARQ_JOB_KEYS))
        finally:
            if own:
                await client.aclose()


def new_namespace(endpoint: RedisEndpoint) -> RedisNamespace:
    return RedisNamespace(endpoint, f"pixsim7:t:{unique_suffix()}:")
