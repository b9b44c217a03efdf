"""What a rolled-back transaction leaves behind, seen and undone for the rollback tier: what
other connections committed, locks, prepared statements and sequences in the shared database,
what a test may replace on a shared app, and what the app's Redis client leaves."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import asyncpg
from fastapi import FastAPI


@dataclass(frozen=True)
class Observation:
    """What the tier compares before and after a test."""

    tables: dict[str, str]  # each table: "rows:newest xmin" (a commit anywhere changes it)
    catalog: str  # pg_class the same way: DDL committed
    own_locks: int  # advisory locks of the tests' connection
    other_locks: int  # advisory locks of other connections to the database
    prepared: list[str]  # statements PREPAREd in SQL on the tests' connection
    sequences: dict[str, int | None]  # each sequence's last value (None: never used)

    def committed_since(self, after: Observation) -> list[str]:
        """What was committed or left between this observation and `after`, in words."""
        left = []
        changed = sorted(t for t in after.tables if after.tables[t] != self.tables.get(t))
        if changed:
            left.append(f"rows of {', '.join(changed)} were committed to the shared database")
        if after.catalog != self.catalog:
            left.append("tables or other objects were created, altered or dropped and committed")
        if after.other_locks:
            left.append(f"{after.other_locks} advisory lock(s) are held by a connection the "
                        "test opened and left open")
        return left


class Observer:
    """A connection of the tier's own to the shared database, reading what a rollback of the
    tests' connection does not undo, in one query: each table's rows and newest xmin,
    pg_class's (DDL), the sequences, the advisory locks. The statements PREPAREd on the tests'
    connection are read there at the same time (`prepared_on`)."""

    def __init__(self, url: str, tables: list[Any], preparer: Any) -> None:
        self.url, self.tables = url, tables
        columns = [f"(SELECT count(*) || ':' || coalesce(max(xmin::text::bigint), 0) FROM "
                   f"{preparer.format_table(t)})" for t in tables]
        columns += [
            # One scan of pg_class, the user's schemas' rows: DDL committed (their count and
            # newest xmin), and each sequence's last value (None until used), without
            # pg_sequences' privilege checks.
            "(SELECT json_build_array(count(*) || ':' || coalesce(max(xmin::text::bigint), 0), "
            "coalesce(json_object_agg(oid::regclass::text, pg_sequence_last_value(oid)) "
            "FILTER (WHERE relkind = 'S'), '{}')) FROM pg_class WHERE relnamespace <> ALL ("
            "array['pg_catalog'::regnamespace, 'information_schema'::regnamespace, "
            "'pg_toast'::regnamespace]))",
            # One look at pg_locks: the tests' connection's ($1), and others' in the database.
            "(SELECT array[count(*) FILTER (WHERE pid = $1), count(*) FILTER (WHERE pid <> $1 "
            "AND pid <> pg_backend_pid())] FROM pg_locks WHERE locktype = 'advisory' AND "
            "database = (SELECT oid FROM pg_database WHERE datname = current_database()))",
        ]
        self.query = f"SELECT {', '.join(columns)}"
        self._connection: Any = None

    async def observe(self, tests_pid: int) -> Observation:
        """What the database holds now; the statements PREPAREd on the tests' connection are
        not seen here (`prepared_on` reads them there)."""
        if self._connection is None:
            self._connection = await asyncpg.connect(self.url, timeout=10)
        values = await self._connection.fetchrow(self.query, tests_pid)
        count = len(self.tables)
        relations, (own_locks, other_locks) = values[count:]
        catalog, sequences = json.loads(relations)
        return Observation(
            tables={t.fullname: value for t, value in zip(self.tables, values, strict=False)},
            catalog=catalog, own_locks=int(own_locks), other_locks=int(other_locks),
            prepared=[], sequences=sequences)

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.close()


async def prepared_on(raw: Any) -> list[str]:
    """The statements PREPAREd in SQL on a driver connection (asyncpg's own are not)."""
    return list(await raw.fetchval("SELECT coalesce(array_agg(name::text), '{}') "
                                   "FROM pg_prepared_statements WHERE from_sql"))


async def reset(raw: Any, before: Observation, after: Observation) -> None:
    """Undo what a rollback leaves: sequences moved (by nextval in the rolled-back
    transaction, or setval) go back, and statements the test PREPAREd are deallocated. One
    round trip, and only when there is something to undo."""
    calls = []
    for name, last in after.sequences.items():
        if name not in before.sequences or before.sequences[name] == last:
            continue
        was, literal = before.sequences[name], "'" + name.replace("'", "''") + "'"
        calls.append(f"setval({literal}, {was}, true)" if was is not None else
                     f"setval({literal}, (SELECT seqstart FROM pg_sequence "
                     f"WHERE seqrelid = {literal}::regclass), false)")
    if calls:
        await raw.execute(f"SELECT {', '.join(calls)}")
    for name in after.prepared:
        await raw.execute(f'DEALLOCATE "{name.replace(chr(34), chr(34) * 2)}"')


@dataclass
class AppSnapshot:
    """What a test may replace on a shared app and the tier puts back: each `app.state`
    value, the dependency overrides, the settings' values."""

    state: dict[str, Any]
    overrides: dict[Any, Any]
    settings: dict[str, Any] | None

    @classmethod
    def of(cls, app: FastAPI) -> AppSnapshot:
        settings = getattr(app.state, "settings", None)
        return cls(dict(vars(app.state)["_state"]), dict(app.dependency_overrides),
                   _values(settings) if settings is not None else None)

    def restore(self, app: FastAPI) -> None:
        state = vars(app.state)["_state"]
        for key, value in self.state.items():
            if state.get(key) is not value:
                state[key] = value
        if app.dependency_overrides != self.overrides:
            app.dependency_overrides.clear()
            app.dependency_overrides.update(self.overrides)
        settings = getattr(app.state, "settings", None)
        if self.settings is not None and vars(settings) != self.settings:
            vars(settings).update(self.settings)


def _values(settings: Any) -> dict[str, Any]:
    # A copy deep enough for settings (a list, such as CORS_ORIGINS, is their deepest value),
    # and ten times cheaper than copy.deepcopy on each test.
    return {key: value.copy() if isinstance(value, list | dict | set) else value
            for key, value in vars(settings).items()}


def coroutine_name(task: asyncio.Task[Any]) -> str:
    coroutine = task.get_coro()
    return getattr(coroutine, "__qualname__", type(coroutine).__name__)


# Commands that write the key in their first argument (MSET and MSETNX: every other one).
_WRITES = frozenset({
    "SET", "SETEX", "PSETEX", "SETNX", "GETSET", "GETDEL", "GETEX", "APPEND", "SETRANGE",
    "INCR", "INCRBY", "INCRBYFLOAT", "DECR", "DECRBY", "HSET", "HSETNX", "HMSET", "HINCRBY",
    "HINCRBYFLOAT", "LPUSH", "RPUSH", "LPUSHX", "RPUSHX", "LSET", "LINSERT", "SADD", "ZADD",
    "ZINCRBY", "XADD", "PFADD", "SETBIT", "EXPIRE", "PEXPIRE", "EXPIREAT", "PEXPIREAT",
    "PERSIST", "RESTORE"})


class RedisLeaks:
    """What a test makes the app's Redis client leave outside the app's prefix: keys it
    writes there (its arq job keys aside, which the tier clears with its queue) and pub/sub
    connections it opens. Recorded from `watch()` to `undo()`; commands sent through a
    pipeline are not seen."""

    def __init__(self, client: Any, prefix: str) -> None:
        self.client, self.prefix = client, prefix
        self.keys: set[Any] = set()
        self.pubsubs: list[Any] = []

    def watch(self) -> RedisLeaks:
        execute, pubsub = self.client.execute_command, self.client.pubsub

        async def recording(*args: Any, **options: Any) -> Any:
            self._note(args)
            return await execute(*args, **options)

        def tracked(**kwargs: Any) -> Any:
            opened = pubsub(**kwargs)
            self.pubsubs.append(opened)
            return opened

        self.client.execute_command, self.client.pubsub = recording, tracked
        return self

    def _note(self, args: tuple[Any, ...]) -> None:
        name = str(args[0]).upper() if args else ""
        if name not in _WRITES and name not in ("MSET", "MSETNX"):
            return
        keys = args[1::2] if name in ("MSET", "MSETNX") else args[1:2]
        for key in keys:
            text = key.decode(errors="replace") if isinstance(key, bytes) else str(key)
            if not text.startswith((self.prefix, "arq:")):
                self.keys.add(key)

    async def undo(self, cleaner: Any) -> None:
        """Stop recording; close the pub/sub connections and delete the keys (through
        `cleaner`, a client of the tier's own)."""
        for name in ("execute_command", "pubsub"):
            vars(self.client).pop(name, None)  # the class's methods again
        for opened in self.pubsubs:
            await opened.aclose()
        if self.keys:
            await cleaner.delete(*self.keys)
