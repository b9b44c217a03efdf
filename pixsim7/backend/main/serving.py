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


class ReadTimeoutH11Protocol(H11Protocol):
    """h11 with a deadline for each request head, which uvicorn itself does not have.

    A client that connects, or starts a request, and does not finish its head within
    `read_timeout` seconds is disconnected (slowloris, half request lines).
    """

    def __init__(self, *args: Any, read_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.read_timeout = read_timeout
        self._head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._follow_head()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._follow_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

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
        http=functools.partial(ReadTimeoutH11Protocol,
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
