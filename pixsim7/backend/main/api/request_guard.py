"""Requests at the boundary: bounded in size and time, with JSON every layer can store and render.

`RequestGuard` refuses a head larger than MAX_HEADER_BYTES (431), reads a body (at most
MAX_BODY_BYTES, 413 beyond, within REQUEST_READ_TIMEOUT, 408 after) before any route sees it,
and refuses JSON that PostgreSQL, Redis or the response encoder cannot take back: non-finite
numbers, NUL characters, lone surrogates and nesting deeper than `MAX_JSON_DEPTH`.
"""

from __future__ import annotations

import asyncio

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pixsim7.backend.main.shared.json_values import (
    MAX_JSON_DEPTH,
    UnsafeJSON,
    check_json_value,
    excerpt,
    parse_json,
)

__all__ = [
    "MAX_JSON_DEPTH", "RequestGuard", "UnsafeJSON", "check_json_value", "excerpt", "parse_json",
]


def _is_json(headers: Headers) -> bool:
    # FastAPI reads a body without a content type as JSON too.
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    return content_type in ("", "application/json") or (
        content_type.startswith("application/") and content_type.endswith("+json"))


def _head_size(scope: Scope) -> int:
    path = scope.get("raw_path") or scope["path"].encode("utf-8", "surrogateescape")
    return len(path) + len(scope.get("query_string", b"")) + sum(
        len(name) + len(value) for name, value in scope["headers"])


class RequestGuard:
    """Pure ASGI middleware: 431 past `max_head_bytes`, 413 past `max_bytes` (announced or
    streamed), 408 for a body slower than `read_timeout`, 422 for unsafe JSON."""

    def __init__(self, app: ASGIApp, max_bytes: int, max_head_bytes: int,
                 read_timeout: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_head_bytes = max_head_bytes
        self.read_timeout = read_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # uvicorn bounds only a head that is still arriving; one that came whole is checked here.
        oversized = scope["type"] in ("http", "websocket") and \
            _head_size(scope) > self.max_head_bytes
        if scope["type"] == "websocket" and oversized:
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if oversized:
            await _answer(scope, receive, send, 431,
                          f"request head is larger than MAX_HEADER_BYTES ({self.max_head_bytes})")
            return
        headers = Headers(scope=scope)
        if "content-length" not in headers and "transfer-encoding" not in headers:
            # HTTP/1.1: no length and no chunking means no body, so there is nothing to bound.
            await self.app(scope, receive, send)
            return
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(scope, receive, send)
            return
        try:
            async with asyncio.timeout(self.read_timeout):
                body = await self._read(receive)
        except TimeoutError:
            await _answer(scope, receive, send, 408, "the request body did not arrive within "
                          f"REQUEST_READ_TIMEOUT ({self.read_timeout:g} s)")
            return
        except _TooLarge:
            await self._too_large(scope, receive, send)
            return
        if body is None:
            return  # the client went away before sending its body; nothing to answer
        if body and _is_json(headers):
            try:
                parse_json(body)
            except UnsafeJSON as exc:
                await JSONResponse({"detail": [exc.as_error()]}, status_code=422)(
                    scope, receive, send)
                return
            except ValueError:
                pass  # syntax and encoding errors: the route answers them in its own words
        await self.app(scope, _replay(body, receive), send)

    async def _read(self, receive: Receive) -> bytes | None:
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                raise _TooLarge
            chunks.append(chunk)
            more = message.get("more_body", False)
        return b"".join(chunks)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        await _answer(scope, receive, send, 413,
                      f"request body is larger than MAX_BODY_BYTES ({self.max_bytes} bytes)")


class _TooLarge(Exception):
    """The body went past MAX_BODY_BYTES while it was being read."""


async def _answer(scope: Scope, receive: Receive, send: Send, status: int, detail: str) -> None:
    # Connection: close, so the server drops the rest of the body instead of reading it.
    response = JSONResponse({"detail": detail}, status_code=status,
                            headers={"Connection": "close"})
    await response(scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
