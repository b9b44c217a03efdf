"""The one way tests wait for something: poll a predicate until it holds or time runs out.

A predicate returns a truthy value when done (that value is returned) and may itself assert,
to stop early with its own message (a process that died, say).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")
Message = str | Callable[[], str]


class WaitTimeout(AssertionError):
    """The predicate did not hold within the timeout."""


def _timed_out(timeout: float, message: Message) -> WaitTimeout:
    text = message() if callable(message) else message
    return WaitTimeout(f"not done within {timeout:g}s" + (f": {text}" if text else ""))


def wait_until(predicate: Callable[[], T], *, timeout: float = 10.0, interval: float = 0.05,
               message: Message = "") -> T:
    """Call `predicate` every `interval` s until it returns a truthy value; return that value.

    After `timeout` s, raise WaitTimeout with `message` (a callable is evaluated only then).
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise _timed_out(timeout, message)
        time.sleep(interval)


async def wait_until_async(predicate: Callable[[], T | Awaitable[T]], *, timeout: float = 10.0,
                           interval: float = 0.05, message: Message = "") -> T:
    """`wait_until` for async tests: sleeps without blocking the loop; `predicate` may be a
    coroutine function."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return result
        if time.monotonic() >= deadline:
            raise _timed_out(timeout, message)
        await asyncio.sleep(interval)
