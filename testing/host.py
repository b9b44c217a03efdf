"""Facts about this host that the backends and the cleanup both need, and the one way the
kit runs async code from sync code."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

ENV_SERVICES_DIR = "PIXSIM7_TEST_SERVICES_DIR"


def docker_available(timeout: float = 2.0) -> bool:
    """True when a Docker engine answers a ping within `timeout` seconds."""
    try:
        import docker
    except ImportError:
        return False
    try:
        client = docker.from_env(timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def memory_dir(min_free: int = 1 << 30) -> str | None:
    """A RAM-backed temp folder (Linux /dev/shm) when it has room, else None (the default).

    Throwaway test servers lose nothing by living in memory, and CREATE DATABASE there takes
    milliseconds instead of the hundreds it takes on a slow disk.
    """
    shm = Path("/dev/shm")
    try:
        usage = shutil.disk_usage(shm)
    except OSError:
        return None
    return str(shm) if os.access(shm, os.W_OK) and usage.free >= min_free else None


class SyncRunner:
    """Runs coroutines to their end from sync code on one event loop of its own, which lives
    until `close()` (so a connection opened in one call serves the next). From a thread whose
    own loop is running (a sync helper called from an async test), the loop runs in a thread
    of its own for the call."""

    def __init__(self) -> None:
        self._runner = asyncio.Runner()

    def run(self, make: Callable[[], Awaitable[T]]) -> T:
        return _outside_any_loop(lambda: self._runner.run(_wrap(make)))

    def close(self) -> None:
        _outside_any_loop(self._runner.close)  # closing runs the loop once more


def _outside_any_loop(call: Callable[[], T]) -> T:
    """`call()` here, or in a thread of its own when this thread runs an event loop (which
    would refuse to run a second one)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return call()
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="pixsim7-kit") as pool:
        return pool.submit(call).result()


async def _wrap(make: Callable[[], Awaitable[T]]) -> T:
    return await make()


def run_sync(make: Callable[[], Awaitable[T]]) -> T:
    """`make()`'s coroutine run to its end from sync code, on a loop used for it alone."""
    runner = SyncRunner()
    try:
        return runner.run(make)
    finally:
        runner.close()
