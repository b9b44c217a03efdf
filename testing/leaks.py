"""What a rolled-back transaction leaves behind, seen and undone for the rollback tier: what
other connections committed, locks, prepared statements and sequences in the shared database,
what a test may replace on a shared app, and what the app's Redis client leaves."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

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
    """What a rollback of the tests' connection does not undo, read on that connection in one
    query once its transaction has ended: each table's rows and newest xmin (a commit by any
    connection changes it), the user schemas' pg_class rows (DDL committed) and sequences,
    the advisory locks of this connection and of others in the database, and the statements
    PREPAREd in SQL on this connection. One round trip, as the counting query before it: a
    connection of the tier's own, read side by side with this one, cost more (its second
    round trip, and the work of two backends on two cores)."""

    def __init__(self, tables: list[Any], preparer: Any) -> None:
        self.tables, self.preparer = tables, preparer
        self.sequences: list[str] = []
        self.query = ""

    async def _prepare(self, raw: Any) -> None:
        # The sequences are named once, at the first observation (before any test): one made
        # later is DDL, seen as such.
        rows = await raw.fetch(f"SELECT oid, oid::regclass::text AS name FROM pg_class "
                               f"WHERE relkind = 'S' AND {_USER_SCHEMAS}")
        self.sequences = [row["name"] for row in rows]
        last_values = ", ".join(f"pg_sequence_last_value({int(row['oid'])})" for row in rows)
        columns = [f"(SELECT count(*) || ':' || coalesce(max(xmin::text::bigint), 0) FROM "
                   f"{self.preparer.format_table(t)})" for t in self.tables]
        columns += [
            # DDL committed: the user schemas' pg_class rows, their count and newest xmin.
            "(SELECT count(*) || ':' || coalesce(max(xmin::text::bigint), 0) FROM pg_class "
            f"WHERE {_USER_SCHEMAS})",
            # Each sequence's last value (NULL until used), without pg_sequences' checks.
            f"array[{last_values}]::bigint[]",
            # One look at pg_locks: this connection's, and others' in the database.
            "(SELECT array[count(*) FILTER (WHERE pid = pg_backend_pid()), count(*) FILTER "
            "(WHERE pid <> pg_backend_pid())] FROM pg_locks WHERE locktype = 'advisory' AND "
            "database = (SELECT oid FROM pg_database WHERE datname = current_database()))",
            # asyncpg's own statements are not from SQL.
            "(SELECT coalesce(array_agg(name::text), '{}') FROM pg_prepared_statements "
            "WHERE from_sql)",
        ]
        # No parameter: the driver prepares it once per connection and the server plans it
        # once.
        self.query = f"SELECT {', '.join(columns)}"

    async def observe(self, raw: Any) -> Observation:
        """What the database holds now, read on `raw` (the driver's connection), which must
        not be inside the test's transaction."""
        if not self.query:
            await self._prepare(raw)
        values = await raw.fetchrow(self.query)
        count = len(self.tables)
        catalog, last_values, (own_locks, other_locks), prepared = values[count:]
        return Observation(
            tables={t.fullname: value for t, value in zip(self.tables, values, strict=False)},
            catalog=catalog, own_locks=int(own_locks), other_locks=int(other_locks),
            prepared=list(prepared), sequences=dict(zip(self.sequences, last_values, strict=True)))


_USER_SCHEMAS = ("relnamespace <> ALL (array['pg_catalog'::regnamespace, "
                 "'information_schema'::regnamespace, 'pg_toast'::regnamespace])")


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
