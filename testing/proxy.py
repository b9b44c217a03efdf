"""Loopback TCP proxy that lets a test take a real PostgreSQL or Redis server away mid-run.

The proxy runs its own event loop in a daemon thread, so it keeps forwarding (or refusing)
while the test's own loop is busy or blocked, and works the same for sync and async tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

__all__ = ["FaultProxy", "Mode"]

Mode = Literal["pass", "cut", "blackhole"]

_CHUNK = 64 * 1024
_CONTROL_TIMEOUT = 10.0
_BACKLOG = 128
_ACCEPT_RETRY_DELAY = 1.0
# libpq / asyncpg read these from the query string and they override the URL's netloc,
# which would silently route around the proxy.
_HOST_QUERY_KEYS = frozenset({"host", "hostaddr", "port"})


class _Conn:
    """One accepted client socket, its stream once wrapped, and its upstream once dialled."""

    __slots__ = ("sock", "client", "upstream", "silenced", "started", "task")

    def __init__(self, sock: socket.socket, *, silenced: bool) -> None:
        self.sock = sock
        self.client: asyncio.StreamWriter | None = None
        self.upstream: asyncio.StreamWriter | None = None
        self.silenced = silenced
        self.started = False
        self.task: asyncio.Task[None] | None = None

    def abort(self) -> None:
        """Drop both sides at once, discarding anything still buffered."""
        for writer in (self.client, self.upstream):
            if writer is not None:
                writer.transport.abort()
        # Closing the raw socket makes the client see the close now rather than a loop turn
        # later. Skipped while open_connection() is still wrapping it: that transport owns
        # the fd until the handler's cancellation unwinds it.
        if self.client is not None or not self.started:
            self.sock.close()

    async def wait_closed(self) -> None:
        """Wait until both sides are closed at the OS level."""
        for writer in (self.client, self.upstream):
            if writer is not None:
                with contextlib.suppress(Exception):
                    await writer.wait_closed()


class FaultProxy:
    """TCP forwarder in front of ``target_host:target_port`` with switchable faults.

    Modes: ``"pass"`` forwards bytes both ways; ``"cut"`` closes the listener (new connects
    get ECONNREFUSED) and every open connection; ``"blackhole"`` accepts but never forwards
    or answers anything. Every mode change is in force when the method returns.
    """

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        name: str = "proxy",
        listen_host: str = "127.0.0.1",
    ) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.name = name
        self._listen_host = listen_host
        self._port: int | None = None
        self._mode: Mode = "pass"
        self._conns: set[_Conn] = set()
        self._listener: socket.socket | None = None
        self._accept_retry: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._lifecycle = threading.Lock()
        self._stopped = False

    def __repr__(self) -> str:
        where = self.address if self._port is not None else "not started"
        return (
            f"<FaultProxy {self.name} {where} -> {self.target_host}:{self.target_port}"
            f" mode={self._mode}>"
        )

    def start(self) -> FaultProxy:
        """Start the proxy thread and listen on an ephemeral port; returns ``self``."""
        with self._lifecycle:
            if self._thread is not None or self._stopped:
                raise RuntimeError(f"{self.name}: FaultProxy can only be started once")
            self._thread = threading.Thread(
                target=self._run, name=f"FaultProxy-{self.name}", daemon=True
            )
            self._thread.start()
        if not self._ready.wait(_CONTROL_TIMEOUT):
            raise RuntimeError(f"{self.name}: proxy thread did not start")
        if self._startup_error is not None:
            self._thread.join(_CONTROL_TIMEOUT)
            raise self._startup_error
        return self

    def stop(self) -> None:
        """Close the listener and every connection, then join the thread. Idempotent.

        Afterwards ``mode`` reads ``"cut"``, which is what clients observe.
        """
        self._check_not_proxy_thread()
        with self._lifecycle:
            if self._stopped or self._thread is None:
                self._stopped = True
                return
            self._stopped = True
            thread, loop, stop_event = self._thread, self._loop, self._stop_event
        if loop is not None and stop_event is not None and thread.is_alive():
            with contextlib.suppress(RuntimeError):  # loop already gone
                loop.call_soon_threadsafe(stop_event.set)
        thread.join(_CONTROL_TIMEOUT)
        if thread.is_alive():
            raise RuntimeError(f"{self.name}: proxy thread did not stop")

    def __enter__(self) -> FaultProxy:
        return self if self._thread is not None else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def host(self) -> str:
        """Host the proxy listens on."""
        return self._listen_host

    @property
    def port(self) -> int:
        """Port the proxy listens on; fixed for the proxy's lifetime, known after ``start()``."""
        if self._port is None:
            raise RuntimeError(f"{self.name}: proxy is not started")
        return self._port

    @property
    def address(self) -> str:
        """``host:port`` of the proxy, with IPv6 hosts in brackets."""
        return f"{_url_host(self.host)}:{self.port}"

    def rewrite_url(self, url: str) -> str:
        """Return ``url`` pointing at the proxy; scheme, credentials, path and query are kept."""
        parts = urlsplit(url)
        if not parts.netloc or parts.hostname is None:
            raise ValueError(f"URL has no host to replace: {url!r}")
        overriding = _HOST_QUERY_KEYS & {key for key, _ in parse_qsl(parts.query)}
        if overriding:
            raise ValueError(
                f"URL query sets {sorted(overriding)}, which would bypass the proxy: {url!r}"
            )
        userinfo, at, _ = parts.netloc.rpartition("@")
        return parts._replace(netloc=f"{userinfo}{at}{self.address}").geturl()

    @property
    def mode(self) -> Mode:
        """Current mode: ``"pass"``, ``"cut"`` or ``"blackhole"``."""
        return self._mode

    @property
    def connections(self) -> int:
        """Number of client connections the proxy currently holds open."""
        return len(self._conns)

    def restore(self) -> None:
        """Forward again; after a cut, re-listen on the same port (OSError if it was taken).

        Connections silenced by ``blackhole()`` are closed, not resumed: bytes were dropped
        while silent, so their protocol streams can no longer be trusted.
        """
        self._control(self._set_pass)

    def cut(self) -> None:
        """Refuse new connections (listener closed, ECONNREFUSED) and close open ones at once."""
        self._control(self._set_cut)

    def blackhole(self) -> None:
        """Accept new connections but never forward or answer; open ones go silent both ways."""
        self._control(self._set_blackhole)

    def _check_not_proxy_thread(self) -> None:
        if threading.current_thread() is self._thread:
            raise RuntimeError(f"{self.name}: cannot control the proxy from its own thread")

    def _control(self, change: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run a mode change on the proxy loop and wait for it, so it is in force on return."""
        self._check_not_proxy_thread()
        loop = self._loop
        if loop is None or self._stopped or not loop.is_running():
            raise RuntimeError(f"{self.name}: proxy is not running")
        future = asyncio.run_coroutine_threadsafe(change(), loop)
        try:
            future.result(_CONTROL_TIMEOUT)
        except TimeoutError:
            future.cancel()
            raise RuntimeError(f"{self.name}: proxy did not acknowledge the mode change") from None

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        try:
            self._listen()
        except BaseException as exc:
            self._startup_error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            await self._stop_event.wait()
        finally:
            await self._set_cut()

    def _listen(self) -> None:
        family = socket.AF_INET6 if ":" in self._listen_host else socket.AF_INET
        # socket.create_server sets SO_REUSEADDR on POSIX, which is what lets a restore bind
        # the same port again while connections closed by the cut sit in TIME_WAIT.
        sock = socket.create_server(
            (self._listen_host, self._port or 0), family=family, backlog=_BACKLOG
        )
        sock.setblocking(False)
        self._listener = sock
        self._port = sock.getsockname()[1]
        asyncio.get_running_loop().add_reader(sock.fileno(), self._accept_ready)

    def _close_listener(self) -> None:
        # Synchronous, so no connection can be accepted after this returns; whatever is
        # still queued in the kernel backlog is reset by the OS.
        if self._accept_retry is not None:
            self._accept_retry.cancel()
            self._accept_retry = None
        if self._listener is not None:
            asyncio.get_running_loop().remove_reader(self._listener.fileno())
            self._listener.close()
            self._listener = None

    def _accept_ready(self) -> None:
        # Accepting in the reader callback (not in a task) means every accepted socket is
        # registered in self._conns before any mode change can run.
        loop = asyncio.get_running_loop()
        listener = self._listener
        for _ in range(_BACKLOG):
            if listener is None:
                return
            try:
                sock, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError:
                # Typically out of file descriptors: back off instead of spinning on a
                # listener that stays readable.
                loop.remove_reader(listener.fileno())
                self._accept_retry = loop.call_later(_ACCEPT_RETRY_DELAY, self._resume_accepting)
                return
            sock.setblocking(False)
            conn = _Conn(sock, silenced=self._mode == "blackhole")
            self._conns.add(conn)
            conn.task = loop.create_task(self._handle(conn))

    def _resume_accepting(self) -> None:
        self._accept_retry = None
        if self._listener is not None:
            asyncio.get_running_loop().add_reader(self._listener.fileno(), self._accept_ready)

    async def _close_all(self, which: Callable[[_Conn], bool]) -> None:
        doomed = [conn for conn in self._conns if which(conn)]
        for conn in doomed:
            self._conns.discard(conn)
            conn.abort()
            if conn.task is not None:
                conn.task.cancel()
        for conn in doomed:
            await conn.wait_closed()
        tasks = [conn.task for conn in doomed if conn.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=_CONTROL_TIMEOUT)

    async def _set_pass(self) -> None:
        # Listen first: if the port was taken meanwhile, the proxy stays cut and says so.
        if self._listener is None:
            self._listen()
        self._mode = "pass"
        await self._close_all(lambda conn: conn.silenced)

    async def _set_cut(self) -> None:
        self._mode = "cut"
        self._close_listener()
        await self._close_all(lambda conn: True)

    async def _set_blackhole(self) -> None:
        if self._listener is None:
            self._listen()
        self._mode = "blackhole"
        for conn in self._conns:
            conn.silenced = True

    async def _handle(self, conn: _Conn) -> None:
        conn.started = True
        try:
            await self._serve(conn)
        finally:
            self._conns.discard(conn)
            conn.abort()
            conn.sock.close()

    async def _serve(self, conn: _Conn) -> None:
        reader, conn.client = await asyncio.open_connection(sock=conn.sock, limit=_CHUNK)
        if conn.silenced:
            await self._pump(conn, reader, None, from_client=True)
            return
        try:
            up_reader, conn.upstream = await asyncio.open_connection(
                self.target_host, self.target_port, limit=_CHUNK
            )
        except OSError:
            return
        await asyncio.gather(
            self._pump(conn, reader, conn.upstream, from_client=True),
            self._pump(conn, up_reader, conn.client, from_client=False),
        )

    async def _pump(
        self,
        conn: _Conn,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter | None,
        *,
        from_client: bool,
    ) -> None:
        """Copy one direction; while silenced keep reading only to notice the peer leaving."""
        try:
            while True:
                data = await reader.read(_CHUNK)
                if not data:
                    break
                if conn.silenced or writer is None or writer.is_closing():
                    continue
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            conn.abort()
            return
        if conn.silenced:
            # A client that leaves a silent connection frees it; an upstream that leaves must
            # not be reported to the client, so that side just stops reading.
            if from_client:
                conn.abort()
            return
        if writer is not None and not writer.is_closing() and writer.can_write_eof():
            # Half-close so in-flight replies still reach a client that finished sending.
            with contextlib.suppress(OSError):
                writer.write_eof()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
