"""How `pixsim7-backend serve` runs uvicorn: every bound a client cannot get around.

What uvicorn cannot bound (slow readers, total upload rate, TLS) is the reverse proxy's job;
GETTING_STARTED says what it must do.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
import sys
import threading
from types import FrameType
from typing import Any

import h11
import uvicorn
from fastapi import FastAPI
from starlette.types import ASGIApp
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.websockets.wsproto_impl import WSProtocol
from wsproto.connection import ConnectionState
from wsproto.events import CloseConnection

from pixsim7.backend.main.startup import StartupAborted, begin_shutdown

# A lingering close (nginx's lingering_close): an answer given before the request's body has
# all arrived (413 and the like) is followed by a FIN, then what the client still sends is read
# and thrown away, for at most this long and this much, before the connection closes. Closed
# at once, unread data makes the kernel send a reset, and a client that sends its whole body
# before reading (Python's urllib) sees the reset instead of the answer.
LINGER_SECONDS = 5.0
LINGER_MAX_BYTES = 64 * 1024 * 1024


class _LingeringTransport:
    """The connection's transport, except that `close` lingers while the client is still
    sending its request body."""

    def __init__(self, transport: asyncio.Transport, protocol: ServedH11Protocol) -> None:
        self._transport = transport
        self._protocol = protocol

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def is_closing(self) -> bool:
        return self._protocol.lingering or self._transport.is_closing()

    def close(self) -> None:
        if self._protocol.lingering:
            return
        if (self._protocol.conn.their_state is h11.SEND_BODY
                and not self._transport.is_closing() and self._transport.can_write_eof()):
            self._protocol.linger()
        else:
            self._transport.close()


class ServedH11Protocol(H11Protocol):
    """h11 with a deadline for each request head, which uvicorn itself does not have, and a
    lingering close.

    A client that connects, or starts a request, and does not finish its head within
    `read_timeout` seconds is disconnected (slowloris, half request lines). An answer given
    before the body arrived is followed by LINGER_SECONDS / LINGER_MAX_BYTES of reading.
    """

    def __init__(self, *args: Any, read_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.read_timeout = read_timeout
        self._head_deadline: asyncio.TimerHandle | None = None
        self.lingering = False
        self._linger_left = LINGER_MAX_BYTES
        self._linger_end: asyncio.TimerHandle | None = None
        self._socket: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._socket = transport
        self.transport = _LingeringTransport(transport, self)  # type: ignore[assignment]
        self._follow_head()

    def data_received(self, data: bytes) -> None:
        if self.lingering:
            self._linger_left -= len(data)
            if self._linger_left <= 0:
                self._socket.close()
            return
        super().data_received(data)
        self._follow_head()

    def eof_received(self) -> bool | None:
        if self.lingering:  # the client sent all it had: done
            self._socket.close()
            return None
        return super().eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._linger_end is not None:
            self._linger_end.cancel()
        super().connection_lost(exc)

    def linger(self) -> None:
        """Send FIN after the answer, then read and discard until the client is done."""
        self.lingering = True
        self._disarm()
        self._socket.write_eof()  # after what is still buffered: the answer goes first
        self._socket.resume_reading()
        self._linger_end = self.loop.call_later(LINGER_SECONDS, self._socket.close)

    def _follow_head(self) -> None:
        # IDLE on their side: the next request head has not fully arrived yet.
        waiting = self.conn.their_state is h11.IDLE and not self.transport.is_closing()
        if waiting and self._head_deadline is None:
            self._head_deadline = self.loop.call_later(self.read_timeout, self._head_too_slow)
        elif not waiting:
            self._disarm()

    def _disarm(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_too_slow(self) -> None:
        self._head_deadline = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


class ClosingWSProtocol(WSProtocol):
    """wsproto that tells a client why it is dropped: a frame that cannot be parsed (invalid
    UTF-8: 1007) gets a close frame with that code instead of a bare disconnect."""

    def handle_close(self, event: CloseConnection) -> None:
        # Still OPEN: the client sent no close; wsproto reports its bad frame this way.
        if not self.close_sent and self.conn.state is ConnectionState.OPEN:
            self.transport.write(self.conn.send(CloseConnection(code=event.code)))
        super().handle_close(event)


def server_config(app: FastAPI, host: str, port: int,
                  asgi: ASGIApp | None = None) -> uvicorn.Config:
    """uvicorn's configuration for `app` (served through `asgi` when given, a wrapper of it),
    with the limits from its settings."""
    settings = app.state.settings
    return uvicorn.Config(
        # pixsim7.requests writes the one access line per request; uvicorn's would repeat it.
        asgi or app, host=host, port=port, log_config=None, access_log=False, lifespan="on",
        http=functools.partial(ServedH11Protocol,
                               read_timeout=settings.request_read_timeout),
        ws=ClosingWSProtocol,
        ws_max_size=settings.ws_max_message_bytes,
        ws_ping_interval=settings.ws_ping_interval,
        ws_ping_timeout=settings.ws_ping_timeout,
        timeout_keep_alive=settings.keep_alive_timeout,
        limit_concurrency=settings.max_connections,
        h11_max_incomplete_event_size=settings.max_header_bytes,
    )


class StartupReporter:
    """The served ASGI app: `app`, except that a startup the plan aborts reaches uvicorn
    without Starlette's traceback, for `serve` to report it as `check` does."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.failure: StartupAborted | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def send_quietly(message: Any) -> None:
            # Starlette sends this from inside its `except`, with the traceback as the text.
            failure = sys.exc_info()[1]
            if message["type"] == "lifespan.startup.failed" and isinstance(
                    failure, StartupAborted):
                self.failure = failure
                message = {**message, "message": ""}
            await send(message)

        try:
            await self.app(scope, receive, send_quietly)
        except StartupAborted:
            if self.failure is None:
                raise


class DrainingServer(uvicorn.Server):
    """On SIGTERM: readiness turns 503 at once; uvicorn stops after SHUTDOWN_DRAIN_SECONDS.

    Load balancers see the 503 and stop sending traffic while requests in flight finish.
    A second signal, or SIGINT, stops at once.
    """

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self.app = app
        self._draining = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        drain = self.app.state.settings.shutdown_drain_seconds
        if sig == signal.SIGTERM and not self._draining and drain > 0 and self.started:
            self._draining = True
            begin_shutdown(self.app)
            logging.getLogger("pixsim7.startup").info(
                "SIGTERM: not ready; draining for %.1f s before shutdown", drain)
            timer = threading.Timer(drain, super().handle_exit, (sig, frame))
            timer.daemon = True
            timer.start()
            return
        super().handle_exit(sig, frame)
