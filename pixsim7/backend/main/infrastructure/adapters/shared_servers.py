"""The embedded servers of one data folder, shared by every process that uses that folder.

`serve` and `worker` (and `check`) started with the same `PIXSIM7_DATA_DIR` use the same
embedded PostgreSQL and Redis: the first to need a server starts it, the others attach to it,
and the last one to let go stops it. The servers never run twice on one folder: whoever comes
next while one runs uses it. What runs, and who uses it, is kept in `<data_dir>/servers.json`,
read and written under an exclusive lock on `<data_dir>/servers.lock`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pixsim7.backend.main.infrastructure.adapters.embedded import (
    EmbeddedPostgres,
    EmbeddedRedis,
    EmbeddedServerError,
    private_folder,
    process_running,
)

logger = logging.getLogger("pixsim7.embedded")

SERVICES = ("postgres", "redis")
STATE_FILE, LOCK_FILE = "servers.json", "servers.lock"
# How a server that must stop is asked to (PostgreSQL: fast shutdown; Redis: save, then exit).
STOP_SIGNALS = {"postgres": signal.SIGINT, "redis": signal.SIGTERM}
STOP_TIMEOUT = 15.0
SUPERVISE_INTERVAL = 0.5  # how often a process looks at the servers it started


def _listening(url: str) -> bool:
    parts = urlsplit(url)
    with contextlib.suppress(OSError, ValueError, TypeError), socket.create_connection(
            (parts.hostname, parts.port), timeout=1):
        return True
    return False


def _start(service: str, data_dir: Path) -> Any:
    if service == "postgres":
        return EmbeddedPostgres(data_dir / "postgres").start()
    return EmbeddedRedis(data_dir / "redis", persist=True).start()


@dataclass
class SharedServers:
    """This process's use of the embedded servers in `data_dir`: `acquire` the services it
    needs (their URLs), `release` them when done."""

    data_dir: Path
    urls: dict[str, str] = field(default_factory=dict)  # what this process uses, by service
    _servers: dict[str, Any] = field(default_factory=dict, repr=False)  # what it started
    _releasing: threading.Event = field(default_factory=threading.Event, repr=False)
    _supervisor: threading.Thread | None = field(default=None, repr=False)

    @property
    def started(self) -> list[str]:
        """The services this process started (the others it shares)."""
        return list(self._servers)

    def summary(self) -> dict[str, str]:
        """Each service in use: `started` here, or `shared` (another process runs it)."""
        return {service: "started" if service in self.started else "shared"
                for service in self.urls}

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        private_folder(self.data_dir)
        lock_fd = os.open(self.data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW,
                          0o600)
        with open(lock_fd, "a") as lock:
            os.fchmod(lock_fd, 0o600)  # a folder an earlier version made kept it 0644
            fcntl.flock(lock, fcntl.LOCK_EX)  # held while a server starts, too: one starter
            path = self.data_dir / STATE_FILE
            try:
                state = json.loads(path.read_text())
            except (OSError, ValueError):
                state = {}
            yield state
            # The URLs carry the servers' passwords: the state is written private, then moved.
            tmp = path.with_suffix(".tmp")
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with open(fd, "w") as file:
                file.write(json.dumps(state, indent=2, sort_keys=True))
            tmp.replace(path)

    def acquire(self, services: Iterable[str]) -> dict[str, str]:
        """The URL of each of `services`: a running server of this folder, else one started
        now. On a failure nothing this call started stays running."""
        with self._locked() as state:
            try:
                for service in services:
                    record = state.get(service)
                    if record is not None and not (process_running(record["pid"])
                                                   and _listening(record["url"])):
                        record = None  # died with the machine or was killed: start anew
                    if record is None:
                        server = self._servers[service] = _start(service, self.data_dir)
                        record = state[service] = {"url": server.url(), "pid": server.pid,
                                                   "users": []}
                    else:
                        logger.info("embedded %s of %s already runs (pid %d): using it",
                                    service, self.data_dir, record["pid"])
                    record["users"] = [pid for pid in record["users"] if process_running(pid)]
                    record["users"].append(os.getpid())
                    self.urls[service] = record["url"]
            except BaseException:
                self._let_go(state)
                raise
        return dict(self.urls)

    def supervise(self, interval: float = SUPERVISE_INTERVAL) -> None:
        """Watch the servers this process started: one that dies (killed, crashed) is started
        again on its port, with its data, until `release`."""
        if self._supervisor is None and self._servers:
            self._supervisor = threading.Thread(target=self._restart_dead, args=(interval,),
                                                name="embedded-servers", daemon=True)
            self._supervisor.start()

    def _restart_dead(self, interval: float) -> None:
        while not self._releasing.wait(interval):
            for service, server in list(self._servers.items()):
                if server.running:
                    continue
                logger.warning("embedded %s of %s stopped unexpectedly (pid %s); starting it "
                               "again on port %s", service, self.data_dir, server.pid,
                               server.port)
                try:
                    with self._locked() as state:
                        if self._releasing.is_set():
                            return
                        server.start()
                        if service in state:
                            state[service]["pid"] = server.pid
                except Exception as exc:  # its old processes may still hold the port: retried
                    logger.error("embedded %s of %s did not start again: %s", service,
                                 self.data_dir, str(exc).splitlines()[0])

    def release(self) -> list[str]:
        """Stop using the servers; stop those nobody else uses any more (returned)."""
        self._releasing.set()
        if self._supervisor is not None:
            self._supervisor.join()
        if not self.urls:
            return []
        with self._locked() as state:
            return self._let_go(state)

    def _let_go(self, state: dict[str, Any]) -> list[str]:
        stopped = []
        for service in reversed(list(self.urls)):
            record = state.get(service)
            if record is None:
                continue
            record["users"] = [pid for pid in record["users"]
                               if pid != os.getpid() and process_running(pid)]
            if record["users"]:
                logger.info("embedded %s of %s stays up: still used by pid %s", service,
                            self.data_dir, ", ".join(map(str, record["users"])))
                continue
            self._stop(service, record["pid"])
            del state[service]
            stopped.append(service)
        self.urls.clear()
        self._servers.clear()
        return stopped

    def _stop(self, service: str, pid: int) -> None:
        server = self._servers.get(service)
        if server is not None:  # started here: a child of this process
            server.stop()
            return
        # Started by a process that has gone: ask it by pid and wait for it to exit.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, STOP_SIGNALS[service])
        _wait_until(lambda: not process_running(pid), STOP_TIMEOUT)
        if process_running(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _wait_until(done: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        time.sleep(0.05)


__all__ = ["SERVICES", "EmbeddedServerError", "SharedServers"]
