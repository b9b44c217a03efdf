"""Requests at the boundary: bounded in size and time, with JSON every layer can store and render.

`RequestGuard` refuses a head larger than MAX_HEADER_BYTES (431), reads a body (at most
MAX_BODY_BYTES, 413 beyond, within REQUEST_READ_TIMEOUT, 408 after) before any route sees it,
and refuses JSON that PostgreSQL, Redis or the response encoder cannot take back: non-finite
numbers, NUL characters, lone surrogates and nesting deeper than `MAX_JSON_DEPTH`.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterator
from typing import Any

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "MAX_JSON_DEPTH", "RequestGuard", "UnsafeJSON", "check_json_value", "excerpt", "parse_json",
]

MAX_JSON_DEPTH = 64
# Python refuses to parse longer integers anyway; a number this long is not a parameter.
MAX_NUMBER_DIGITS = 1000
# How much of a client's input an error body may repeat.
EXCERPT_CHARS = 64


class UnsafeJSON(ValueError):
    """A JSON value that cannot be stored and read back; `loc` is where, as in a 422."""

    def __init__(self, loc: tuple[str | int, ...], kind: str, msg: str) -> None:
        super().__init__(msg)
        self.loc, self.kind, self.msg = loc, kind, msg

    def as_error(self, prefix: tuple[str | int, ...] = ("body",)) -> dict[str, Any]:
        """The problem in FastAPI's validation error shape."""
        loc = [excerpt(part) if isinstance(part, str) else part for part in self.loc]
        return {"type": self.kind, "loc": [*prefix, *loc], "msg": self.msg}


def excerpt(text: str) -> str:
    """At most EXCERPT_CHARS of `text`, always encodable as UTF-8."""
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= EXCERPT_CHARS else text[:EXCERPT_CHARS] + "..."


def _string_problem(text: str) -> str | None:
    if "\x00" in text:
        return "contains a NUL character"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "contains a lone surrogate (not valid Unicode)"
    return None


def _walk(value: Any, loc: tuple[str | int, ...]) -> Iterator[tuple[Any, tuple[str | int, ...]]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield key, loc
            yield from _walk(item, (*loc, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _walk(item, (*loc, index))
    else:
        yield value, loc


def _too_deep(value: Any, loc: tuple[str | int, ...]) -> tuple[str | int, ...] | None:
    """Where `value` first nests deeper than MAX_JSON_DEPTH, or None."""
    # Iterative, so a hostile value cannot exhaust the interpreter's recursion limit here.
    stack = [(value, loc, 0)]
    while stack:
        item, where, level = stack.pop()
        if isinstance(item, dict | list):
            if level == MAX_JSON_DEPTH:
                return where
            children = item.items() if isinstance(item, dict) else enumerate(item)
            stack.extend((child, (*where, key), level + 1) for key, child in children)
    return None


def check_json_value(value: Any, loc: tuple[str | int, ...] = ()) -> None:
    """Raise UnsafeJSON (naming where) unless `value` survives a round trip through storage."""
    if (where := _too_deep(value, loc)) is not None:
        raise UnsafeJSON(where, "json_too_deep", f"nested deeper than {MAX_JSON_DEPTH} levels")
    for item, where in _walk(value, loc):
        if isinstance(item, str) and (problem := _string_problem(item)):
            raise UnsafeJSON(where, "string_unsafe", f"a string or key {problem}")
        if isinstance(item, _TooLong):
            raise UnsafeJSON(where, "number_too_long",
                             f"number longer than {MAX_NUMBER_DIGITS} digits")
        if isinstance(item, float) and not math.isfinite(item):
            raise UnsafeJSON(where, "number_not_finite",
                             "number is not finite (NaN, Infinity and overflows are refused)")


class _TooLong:
    """Stands in for a number too long to convert, so the walk can name where it was."""


def _number(convert: type) -> Any:
    def parse(text: str) -> Any:
        return _TooLong() if len(text) > MAX_NUMBER_DIGITS else convert(text)

    return parse


def parse_json(raw: bytes) -> Any:
    """Parse a request body strictly; UnsafeJSON for what parses but cannot be stored.

    Syntax errors and undecodable bytes raise ValueError as `json.loads` does.
    """
    try:
        # NaN, Infinity and overflows become non-finite floats that the walk then names.
        value = json.loads(raw, parse_constant=float, parse_float=_number(float),
                           parse_int=_number(int))
    except RecursionError:
        raise UnsafeJSON((), "json_too_deep",
                         f"nested deeper than {MAX_JSON_DEPTH} levels") from None
    check_json_value(value)
    return value


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
