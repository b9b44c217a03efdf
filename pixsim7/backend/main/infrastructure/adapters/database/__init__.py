"""Async PostgreSQL access: the `Database` handle, schema creation and the session dependency."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from typing import Any

from fastapi import HTTPException, Request
from sqlalchemy import Connection, Table, inspect, text
from sqlalchemy import exc as sa_errors
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.schema import sort_tables

from .base import Base

__all__ = [
    "DATABASE_OUTAGES",
    "cannot_write",
    "is_database_outage",
    "SCHEMA_LOCK_KEY",
    "Base",
    "Database",
    "DatabaseConfigError",
    "DatabaseUnavailable",
    "get_session",
    "parse_database_url",
]

logger = logging.getLogger(__name__)

# What a lost or unreachable database looks like through SQLAlchemy.
DATABASE_OUTAGES: tuple[type[Exception], ...] = (
    sa_errors.OperationalError, sa_errors.InterfaceError, sa_errors.TimeoutError)

# What the database itself says (SQLSTATE) when it cannot serve now: a connection exception
# (class 08), shutting down, crashed, starting up, not yet accepting connections (57P0x), too
# many connections (53300). asyncpg raises some of these (CannotConnectNowError while starting
# up or shutting down) as errors SQLAlchemy wraps as a plain DBAPIError.
_UNAVAILABLE_SQLSTATES = ("08", "57P", "53300")
# ... and when it answers but cannot write: the reason, for the 503's sentence and readiness.
_CANNOT_WRITE_SQLSTATES = {"53100": "disk full", "53200": "out of memory",
                           "58030": "I/O error", "25006": "read-only"}


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE the database gave for `exc`, from SQLAlchemy's wrapper or the driver's
    error beneath it."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        state = getattr(current, "sqlstate", None) or getattr(current, "pgcode", None)
        if isinstance(state, str) and state:
            return state
        pending += [getattr(current, "orig", None), current.__cause__, current.__context__]
    return None


def is_database_outage(exc: BaseException) -> bool:
    """Whether `exc` means the database is unreachable or not serving now (worth a retry)."""
    if isinstance(exc, DATABASE_OUTAGES) or getattr(exc, "connection_invalidated", False):
        return True
    state = sqlstate(exc)
    return state is not None and state.startswith(_UNAVAILABLE_SQLSTATES)


def cannot_write(exc: BaseException) -> str | None:
    """Why the database refused to write (`disk full`, ...), or None for any other error."""
    state = sqlstate(exc)
    return _CANNOT_WRITE_SQLSTATES.get(state) if state else None


# How long a write the database refused (disk full, ...) keeps readiness `degraded`.
WRITE_FAILURE_MEMORY_S = 30.0

_EXPECTED_FORM = "postgresql://user:password@host:port/dbname"
_POSTGRES_DRIVERS = frozenset({"postgresql", "postgres", "postgresql+asyncpg"})
# Same 63-bit key in every replica whatever its hash seed, so they all serialise on one lock.
SCHEMA_LOCK_KEY = int.from_bytes(hashlib.sha256(b"pixsim7:create_schema").digest()[:8], "big") >> 1


class DatabaseConfigError(ValueError):
    """DATABASE_URL (or a database setting) cannot be used; the message says what to change."""


class DatabaseUnavailable(ConnectionError):
    """The database could not be reached or refused us; one sentence naming where and why."""


# libpq's names for connection options, which hosting platforms write into DATABASE_URL
# (`?sslmode=require`), and what asyncpg calls them; those asyncpg has no use for are dropped.
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
_LIBPQ_DROPPED = ("channel_binding", "gssencmode", "connect_timeout", "sslcompression")
_LIBPQ_CERTS = ("sslrootcert", "sslcert", "sslkey")


def _libpq_to_asyncpg(url: URL) -> tuple[URL, dict[str, Any]]:
    """`url` without libpq's option names, and the connect arguments they stand for."""
    query = dict(url.query)
    args: dict[str, Any] = {}
    mode = query.pop("sslmode", None)
    certs = {name: query.pop(name) for name in _LIBPQ_CERTS if name in query}
    for name in _LIBPQ_DROPPED:
        query.pop(name, None)
    if "application_name" in query:
        args["server_settings"] = {"application_name": str(query.pop("application_name"))}
    if mode is not None and str(mode) not in SSL_MODES:
        raise DatabaseConfigError(
            f"DATABASE_URL has sslmode={mode!r}; use one of {', '.join(SSL_MODES)}")
    if certs:
        args["ssl"] = _ssl_context(str(mode or "verify-full"), certs)
    elif mode is not None:
        args["ssl"] = str(mode)  # asyncpg takes libpq's mode names as they are
    return url.set(query=query), args


def _ssl_context(mode: str, certs: dict[str, Any]) -> Any:
    import ssl

    if mode in ("disable", "allow", "prefer"):
        raise DatabaseConfigError(
            f"DATABASE_URL names certificates with sslmode={mode}; use require, verify-ca "
            "or verify-full")
    try:
        context = ssl.create_default_context(cafile=certs.get("sslrootcert"))
        if "sslcert" in certs:
            context.load_cert_chain(certs["sslcert"], certs.get("sslkey"))
    except (OSError, ssl.SSLError) as exc:
        raise DatabaseConfigError(
            f"DATABASE_URL's certificates cannot be read: {exc.strerror or exc}") from None
    context.check_hostname = mode == "verify-full"
    if mode == "require" and "sslrootcert" not in certs:
        context.verify_mode = ssl.CERT_NONE
    return context


def connect_failure(url: URL, exc: BaseException) -> DatabaseUnavailable:
    """One sentence for a failed connection to `url`: where (host, port, database, user; never
    the password) and why, in the server's or the system's words."""
    where = (f"the database {url.database or '(default)'} at {url.host or 'localhost'}:"
             f"{url.port or 5432} as user {url.username or '(default)'}")
    return DatabaseUnavailable(f"cannot connect to {where}: {_reason(exc)}")


def _reason(exc: BaseException) -> str:
    # The driver's own error, beneath SQLAlchemy's wrapper (whose text adds a class name and a
    # "Background on this error" line).
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and (current.errno or current.strerror):
            # The system's words for the errno: the same whatever event loop connected.
            return (os.strerror(current.errno) if current.errno else current.strerror).lower()
        if isinstance(current, TimeoutError):
            return str(current) or "timed out"
        if getattr(current, "sqlstate", None):
            return str(current).splitlines()[0]
        current = current.__cause__ or getattr(current, "orig", None) or current.__context__
    return str(exc).splitlines()[0] or type(exc).__name__


def parse_database_url(url: str) -> URL:
    """Parse DATABASE_URL into an asyncpg URL; raise DatabaseConfigError without echoing it."""
    if not isinstance(url, str) or not url.strip():
        raise DatabaseConfigError(f"DATABASE_URL is empty; set it to {_EXPECTED_FORM}")
    try:
        parsed = make_url(url.strip())
        parsed.port  # noqa: B018 - a non-numeric port only fails when read
    except (ArgumentError, ValueError):
        # `from None`: the parser's own message would repeat the URL, password included.
        raise DatabaseConfigError(
            f"DATABASE_URL is not a valid database URL; expected {_EXPECTED_FORM}"
        ) from None
    if parsed.drivername not in _POSTGRES_DRIVERS:
        raise DatabaseConfigError(
            f"DATABASE_URL uses the scheme {parsed.drivername!r}; pixsim7 needs PostgreSQL "
            f"through asyncpg: use {_EXPECTED_FORM} or postgresql+asyncpg://..."
        )
    parsed = parsed.set(drivername="postgresql+asyncpg")
    _libpq_to_asyncpg(parsed)  # an sslmode it cannot use stops startup at the settings step
    return parsed


def _mask(url: URL) -> str:
    query = dict(url.query)
    if "password" in query:
        query["password"] = "***"
    return url.set(query=query).render_as_string(hide_password=True)


def _create_missing(sync_conn: Connection, tables: list[Table]) -> list[str]:
    inspector = inspect(sync_conn)
    missing = [t for t in tables if not inspector.has_table(t.name, schema=t.schema)]
    for table in sort_tables(missing):
        table.create(sync_conn, checkfirst=False)
    return [t.fullname for t in missing]


async def _any_missing(conn: AsyncConnection, tables: list[Table]) -> bool:
    """Whether any of `tables` is not visible on the connection's search path."""
    preparer = conn.dialect.identifier_preparer
    names = [preparer.format_table(table) for table in tables]
    found = await conn.scalar(
        text("SELECT count(to_regclass(name)) FROM unnest(CAST(:names AS text[])) AS name"),
        {"names": names},
    )
    return found != len(names)


class Database:
    """One PostgreSQL database reached through an asyncpg connection pool."""

    def __init__(self, url: str, *, connect_timeout: float = 5.0,
                 statement_timeout: float = 5.0) -> None:
        for name, value in (("DATABASE_CONNECT_TIMEOUT", connect_timeout),
                            ("DATABASE_STATEMENT_TIMEOUT", statement_timeout)):
            if not value > 0:
                raise DatabaseConfigError(
                    f"database timeouts must be positive, got {value!r}; check {name}")
        self.url, libpq_args = _libpq_to_asyncpg(parse_database_url(url))
        self.safe_url: str = _mask(self.url)
        self.connect_timeout = connect_timeout
        self.statement_timeout = statement_timeout
        self.engine: AsyncEngine = create_async_engine(
            self.url,
            pool_pre_ping=True,
            pool_timeout=connect_timeout,
            # A statement's parameters are a client's values: never in an error's text or a log.
            hide_parameters=True,
            connect_args={
                # asyncpg's own bound covers TCP connect plus the startup/auth exchange, so a
                # server that accepts connections but never answers cannot stall a checkout.
                "timeout": connect_timeout,
                # Every command, the pool's pre-ping included, on a connection gone silent.
                "command_timeout": statement_timeout,
                **libpq_args,
                # The server stops a slow statement itself, so it holds no locks past the bound.
                "server_settings": {**libpq_args.get("server_settings", {}),
                                    "statement_timeout": str(max(1, round(
                                        statement_timeout * 1000)))},
            },
        )
        self._sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False)
        # The same pool; a statement on it is its own transaction (no BEGIN/COMMIT round trips).
        self._autocommit_engine = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        self._bound: AsyncConnection | None = None
        self._gate: Callable[[], AbstractAsyncContextManager[Any]] = nullcontext
        self._abandoned: set[asyncio.Task[None]] = set()
        self.created_tables: list[str] = []  # what create_schema created on this start
        self._write_failure: tuple[str, float] | None = None  # (reason, monotonic time)

    def __repr__(self) -> str:
        return f"<Database {self.safe_url}>"

    def summary(self) -> dict[str, object]:
        return {"url": self.safe_url, "connect_timeout": self.connect_timeout,
                "statement_timeout": self.statement_timeout}

    def note_write_failure(self, reason: str) -> None:
        """The database refused a write for `reason` (`cannot_write`): readiness says so."""
        self._write_failure = (reason, time.monotonic())

    def write_failure(self) -> str | None:
        """Why a write was refused within the last WRITE_FAILURE_MEMORY_S seconds, or None."""
        if self._write_failure is None:
            return None
        reason, when = self._write_failure
        return reason if time.monotonic() - when < WRITE_FAILURE_MEMORY_S else None

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """An AsyncSession that keeps attributes loaded after commit; the caller commits."""
        async with self._gate(), self._sessionmaker() as session:
            yield session

    @asynccontextmanager
    async def autocommit(self) -> AsyncIterator[AsyncConnection]:
        """A pooled connection on which each statement commits on its own (while bound, a
        savepoint on the bound connection)."""
        if self._bound is not None:
            async with self._gate(), self._bound.begin_nested():
                yield self._bound
            return
        async with self._autocommit_engine.connect() as conn:
            yield conn

    def bind(self, connection: AsyncConnection | None,
             gate: Callable[[], AbstractAsyncContextManager[Any]] = nullcontext) -> None:
        """Open every later session on `connection`, each in a savepoint of the transaction
        its owner holds, and inside `gate()` (one connection runs one command at a time);
        None restores the pool. A test harness that rolls the transaction back calls this,
        the app never does."""
        self._bound, self._gate = connection, gate
        self._sessionmaker = (
            async_sessionmaker(self.engine, expire_on_commit=False) if connection is None
            else async_sessionmaker(bind=connection, expire_on_commit=False,
                                    join_transaction_mode="create_savepoint"))

    async def ping(self, timeout: float) -> None:
        """Check out a connection within `timeout` seconds; raise TimeoutError or the driver
        error if not. The pool pings a pooled connection before handing it out
        (pool_pre_ping) and a new one has just answered the handshake, so a checkout is the
        whole check: a query on top of it would only repeat the pool's."""
        probe = asyncio.create_task(self._check_out(), name=f"ping {self.safe_url}")
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(probe)
        except TimeoutError:
            self._abandon(probe)
            raise TimeoutError(
                f"database {self.safe_url} did not answer within {timeout:g}s"
            ) from None
        except BaseException:
            self._abandon(probe)
            raise

    async def _check_out(self) -> None:
        conn = await self.engine.connect()
        await conn.close()

    def _abandon(self, probe: asyncio.Task[None]) -> None:
        # SQLAlchemy closes a cancelled connection gracefully, which can itself wait on a silent
        # server; the caller gets its answer now and the cleanup finishes in the background.
        if probe.done():
            return
        probe.cancel()
        self._abandoned.add(probe)
        probe.add_done_callback(self._forget)

    def _forget(self, probe: asyncio.Task[None]) -> None:
        self._abandoned.discard(probe)
        if not probe.cancelled():
            probe.exception()

    async def create_schema(self, tables: Iterable[Table]) -> list[str]:
        """Create the tables that do not exist yet and return their names, in the given order."""
        wanted = list(dict.fromkeys(tables))
        if not wanted:
            return []
        # Most starts find every table in place (a restart, a replica, a cloned template): one
        # catalog query, outside a transaction, then replaces the lock and the reflection.
        async with self.autocommit() as conn:
            if not await _any_missing(conn, wanted):
                return []
        async with self.engine.begin() as conn:
            # Transaction-scoped lock: replicas starting together queue here, and each later one
            # sees the tables the first committed instead of racing it to CREATE them.
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK_KEY})
            created = await conn.run_sync(_create_missing, wanted)
        if created:
            logger.info("created tables %s in %s", ", ".join(created), self.safe_url)
        self.created_tables = created
        return created

    async def dispose(self) -> None:
        """Close pooled connections, giving up after the connect timeout on a silent server."""
        if self._abandoned:
            await asyncio.wait(set(self._abandoned), timeout=self.connect_timeout)
        try:
            async with asyncio.timeout(self.connect_timeout):
                await self.engine.dispose()
        except TimeoutError:
            logger.warning(
                "closing connections to %s took longer than %gs; dropping them",
                self.safe_url,
                self.connect_timeout,
            )


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """FastAPI dependency: a session on `request.app.state.db`; 503 if there is no database."""
    db: Database | None = getattr(request.app.state, "db", None)
    if db is None:
        raise HTTPException(
            status_code=503,
            detail="database is not configured: set DATABASE_URL and restart the backend",
        )
    async with db.session() as session:
        yield session

