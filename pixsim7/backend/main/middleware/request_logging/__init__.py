"""One log line per HTTP request on logger `pixsim7.requests`: method, path, status, duration.

Probes that succeed log at DEBUG, so a probe every few seconds does not flood the log.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

LOGGER_NAME = "pixsim7.requests"
PROBE_PATHS = frozenset({"/", "/ready", "/health", "/metrics"})


class RequestLoggingMiddleware:
    """Pure ASGI middleware; requests that raise are logged with status 500 and re-raised."""

    def __init__(self, app: ASGIApp, logger_name: str = LOGGER_NAME) -> None:
        self.app = app
        self.logger = logging.getLogger(logger_name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_recording_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_recording_status)
        finally:
            duration_ms = (time.perf_counter() - started) * 1000
            self._log(scope, status, duration_ms)

    def _log(self, scope: Scope, status: int, duration_ms: float) -> None:
        quiet = scope["path"] in PROBE_PATHS and status < 400
        level = logging.DEBUG if quiet else logging.INFO
        if self.logger.isEnabledFor(level):
            # Read after the app ran: the request id middleware sits outside this one.
            request_id = scope.get("state", {}).get("request_id")
            self.logger.log(
                level,
                "%s %s %d %.1fms",
                scope["method"],
                scope["path"],
                status,
                duration_ms,
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "status_code": status,
                    "duration_ms": round(duration_ms, 3),
                    "request_id": request_id,
                },
            )


def build(settings: Any) -> tuple[type, dict[str, Any]]:
    """The middleware class and its keyword arguments."""
    return RequestLoggingMiddleware, {"logger_name": LOGGER_NAME}
