"""JSON that every layer can store and render: PostgreSQL, Redis and the response encoder.

Refused: non-finite numbers, numbers too long to be parameters, NUL characters, lone
surrogates, and nesting deeper than `MAX_JSON_DEPTH`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

__all__ = ["MAX_JSON_DEPTH", "UnsafeJSON", "check_json_value", "excerpt", "parse_json"]

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
