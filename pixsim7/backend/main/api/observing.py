"""One way for pure ASGI middleware to see each HTTP response's status and duration."""

from __future__ import annotations

import time

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# What a request gets when its client went away before it was answered (nginx's 499): not a
# server error, so neither the access log nor the 5xx counters call it one.
CLIENT_CLOSED_REQUEST = 499


class ResponseObserver:
    """Pure ASGI middleware calling `observe(scope, status, seconds)` once per HTTP request,
    also when the app raises (status 500, and the error goes on up)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def observe(self, scope: Scope, status: int, seconds: float) -> None:
        raise NotImplementedError

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        answered = gone = False

        async def receive_noting_disconnect() -> Message:
            nonlocal gone
            message = await receive()
            gone = gone or message["type"] == "http.disconnect"
            return message

        async def send_recording_status(message: Message) -> None:
            nonlocal status, answered
            if message["type"] == "http.response.start":
                status, answered = message["status"], True
            await send(message)

        try:
            await self.app(scope, receive_noting_disconnect, send_recording_status)
        except ClientDisconnect:
            if answered or not gone:
                raise
            status = CLIENT_CLOSED_REQUEST  # nobody is left to answer: not an error
        finally:
            if gone and not answered:
                status = CLIENT_CLOSED_REQUEST
            self.observe(scope, status, time.perf_counter() - started)
