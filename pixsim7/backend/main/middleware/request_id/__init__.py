"""X-Request-ID on every HTTP request and response; a uuid4 hex is generated when absent."""

from __future__ import annotations

import re
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = "X-Request-ID"
# Client ids end up in logs, so only short ids of plain characters are trusted.
_ACCEPTABLE = re.compile(r"[A-Za-z0-9._\-]{1,128}")


class RequestIdMiddleware:
    """Pure ASGI middleware storing the id in `request.state.request_id` and echoing it."""

    def __init__(self, app: ASGIApp, header_name: str = HEADER) -> None:
        self.app = app
        self.header_name = header_name
        self._raw_name = header_name.lower().encode("latin-1")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = self._incoming(scope) or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                # Appended raw: the app sets no X-Request-ID of its own, and this runs for every
                # response.
                message["headers"] = [*message.get("headers", ()),
                                      (self._raw_name, request_id.encode("latin-1"))]
            await send(message)

        await self.app(scope, receive, send_with_id)

    def _incoming(self, scope: Scope) -> str | None:
        for name, value in scope.get("headers", ()):
            if name == self._raw_name:
                candidate = value.decode("latin-1").strip()
                return candidate if _ACCEPTABLE.fullmatch(candidate) else None
        return None


def build(settings: Any) -> tuple[type, dict[str, Any]]:
    """The middleware class and its keyword arguments."""
    return RequestIdMiddleware, {"header_name": HEADER}
