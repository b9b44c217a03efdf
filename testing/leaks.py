"""What a rolled-back transaction leaves behind, seen and undone for the rollback tier: the
database as the tests' connection sees it (commits by others, locks, prepared statements,
sequences), and what a test may replace on a shared app."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncConnection


@dataclass(frozen=True)
class Observation:
    """What the tier compares before and after a test, read in one query."""

    tables: dict[str, str]  # each table: "rows:newest xmin" (a commit anywhere changes it)
    catalog: str  # pg_class the same way: DDL committed
    own_locks: int  # advisory locks of the tests' connection
    other_locks: int  # advisory locks of other connections to the database
    prepared: list[str]  # statements PREPAREd in SQL on the tests' connection
    sequences: dict[str, tuple[int | None, int]]  # each sequence: last value, start value

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


async def observe(connection: AsyncConnection, tables: list[Any]) -> Observation:
    """The state of the shared database as the tests' connection sees it, in one query on the
    driver's connection, so no transaction is opened or left open."""
    preparer = connection.dialect.identifier_preparer
    columns = [f"(SELECT count(*) || ':' || coalesce(max(xmin::text::bigint), 0) FROM "
               f"{preparer.format_table(t)})" for t in tables]
    columns += [
        "(SELECT count(*) || ':' || max(xmin::text::bigint) FROM pg_class)",
        # One look at pg_locks (a function scan): the tests' connection's, and others' here.
        "(SELECT array[count(*) FILTER (WHERE pid = pg_backend_pid()), count(*) FILTER ("
        "WHERE pid <> pg_backend_pid() AND database = (SELECT oid FROM pg_database "
        "WHERE datname = current_database()))] FROM pg_locks WHERE locktype = 'advisory')",
        "(SELECT coalesce(array_agg(name::text), '{}') FROM pg_prepared_statements "
        "WHERE from_sql)",
        "(SELECT coalesce(json_object_agg(format('%I.%I', schemaname, sequencename), "
        "json_build_array(last_value, start_value)), '{}') FROM pg_sequences)",
    ]
    raw = await connection.get_raw_connection()
    values = await raw.driver_connection.fetchrow(f"SELECT {', '.join(columns)}")
    count = len(tables)
    catalog, (own_locks, other_locks), prepared, sequences = values[count:]
    # Decoded already where the connection has a json codec (the app's engine sets one).
    sequences = json.loads(sequences) if isinstance(sequences, str) else sequences
    return Observation(
        tables={table.fullname: value for table, value in zip(tables, values, strict=False)},
        catalog=catalog, own_locks=int(own_locks), other_locks=int(other_locks),
        prepared=list(prepared),
        sequences={name: (last, start) for name, (last, start) in sequences.items()})


async def reset(connection: AsyncConnection, before: Observation, after: Observation) -> None:
    """Undo what a rollback leaves: sequences moved (by nextval in the rolled-back
    transaction, or setval) go back, and statements the test PREPAREd are deallocated. One
    round trip, and only when there is something to undo."""
    calls = []
    for name, (last, start) in after.sequences.items():
        was = before.sequences.get(name)
        if was is None or was[0] == last:
            continue
        literal = "'" + name.replace("'", "''") + "'"
        calls.append(f"setval({literal}, {was[0]}, true)" if was[0] is not None
                     else f"setval({literal}, {start}, false)")
    raw = (await connection.get_raw_connection()).driver_connection
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
