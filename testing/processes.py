"""The real `pixsim7-backend` command as a subprocess: its environment, its log, its exit.

`start_backend` starts a long-running command (`serve`, `worker`) writing JSON log lines
(LOG_FORMAT=json) to a log file, read back as records; `run_backend` runs a short one
(`check`, or a `serve` expected to fail) to its end.
"""

from __future__ import annotations

import json
import os
import signal as signals
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import pytest
from pixsim7_testing.polling import wait_until

CLI = Path(sys.executable).with_name("pixsim7-backend")
# The worker through arq's own command line, logging as GETTING_STARTED shows.
ARQ_WORKER = (str(Path(sys.executable).with_name("arq")),
              "pixsim7.backend.main.worker.WorkerSettings",
              "--custom-log-dict", "pixsim7.backend.main.worker.ARQ_LOG_CONFIG")
# The module-level app under plain uvicorn, as an operator may serve it.
UVICORN = (str(Path(sys.executable).with_name("uvicorn")), "pixsim7.backend.main.main:app")
STARTUP_LOGGER = "pixsim7.startup"


@cache
def setting_names() -> frozenset[str]:
    """Every environment variable the backend reads its settings from."""
    from pixsim7.backend.main.shared.config import Settings

    return frozenset({name.upper() for name in Settings.model_fields} | {"PIXSIM7_DATA_DIR"})


def backend_env(values: Mapping[str, str] | None = None, /, **more: str) -> dict[str, str]:
    """This process's environment without any backend setting, plus the given values and
    PYTHONUNBUFFERED=1."""
    names = setting_names()
    env = {key: value for key, value in os.environ.items() if key.upper() not in names}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(values or {})
    env.update(more)
    return env


def parse_log(text: str) -> list[dict[str, Any]]:
    """Each JSON log record (LOG_FORMAT=json) in `text`; other lines (prints) are skipped."""
    records = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                record = json.loads(line)
            except ValueError:
                continue  # the last line may still be half written
            if isinstance(record, dict) and {"level", "logger", "message"} <= record.keys():
                records.append(record)
    return records


def parse_milestones(records: Iterable[dict[str, Any]],
                     phase: str | None = None) -> list[tuple[str, str, str]]:
    """(phase, step, status) of each startup / shutdown milestone among `records`."""
    return [(r["phase"], r["step"], r["status"]) for r in records
            if r["logger"] == STARTUP_LOGGER and "step" in r and phase in (None, r["phase"])]


@dataclass
class BackendProcess:
    """One running `pixsim7-backend` command; its combined output goes to `log`."""

    name: str
    proc: subprocess.Popen
    log: Path
    port: int | None = None
    _signalled: set[int] = field(default_factory=set, repr=False)

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise RuntimeError(f"{self.name} listens on no port")
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def records(self) -> list[dict[str, Any]]:
        """Each JSON log record written so far, with its extra fields as keys."""
        return parse_log(self.output())

    @property
    def log_lines(self) -> list[tuple[str, str, str]]:
        """(level, logger, message) of each log record written so far."""
        return [(r["level"], r["logger"], r["message"]) for r in self.records()]

    def milestones(self, phase: str | None = None) -> list[tuple[str, str, str]]:
        """(phase, step, status) of each milestone logged so far, of one phase if given."""
        return parse_milestones(self.records(), phase)

    def assert_running(self) -> None:
        """Fail at once, with its output, when the process has exited."""
        assert self.proc.poll() is None, f"{self.name} exited early:\n{self.describe()}"

    def has_logged(self, needle: str) -> bool:
        """Whether `needle` is in the output so far; fails if the process has exited."""
        self.assert_running()
        return needle in self.output()

    def ready_body(self) -> dict[str, Any] | None:
        """The `/ready` body once it answers 200, else None; fails if the process has exited."""
        self.assert_running()
        try:
            response = httpx.get(self.base_url + "/ready", timeout=2.0)
        except httpx.TransportError:
            return None
        return response.json() if response.status_code == 200 else None

    def wait_ready(self, timeout: float = 60.0) -> dict[str, Any]:
        """Poll `/ready` until it answers 200; its body."""
        return wait_until(self.ready_body, timeout=timeout, interval=0.1,
                          message=lambda: f"{self.name} not ready:\n{self.describe()}")

    def describe(self, chars: int = 4000) -> str:
        """Its name, exit code and the end of its output: for assertion messages."""
        return f"{self.name} (exit {self.proc.poll()}):\n{self.output()[-chars:]}"

    def send(self, signal: int = signals.SIGTERM) -> None:
        """Send `signal` if the process still runs (`stop` will not send it again)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal)
            self._signalled.add(signal)

    def stop(self, signal: int = signals.SIGTERM, timeout: float = 20.0) -> int:
        """Send `signal` (once), wait up to `timeout` seconds, then kill; the exit code."""
        if signal not in self._signalled:
            self.send(signal)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)


def start_backend(command: str, env: Mapping[str, str], cwd: Path, *, log: Path | None = None,
                  port: int | None = None, name: str | None = None,
                  args: Sequence[str] = ()) -> BackendProcess:
    """Start `pixsim7-backend <command> [args]` in `cwd` (a folder without a `.env`); the
    command `arq` starts the same worker through arq's command line (`ARQ_WORKER`), and
    `uvicorn` the module-level app under plain uvicorn (`UVICORN`).

    `serve` and `uvicorn` listen on 127.0.0.1 at `port`, a free one unless given. Output goes
    to `log` (default `<cwd>/<name>.log`), as JSON lines unless `env` sets LOG_FORMAT.
    """
    env = {"LOG_FORMAT": "json", **env}
    argv = {"arq": [*ARQ_WORKER, *args], "uvicorn": [*UVICORN, *args]}.get(
        command, [str(CLI), command, *args])
    if command in ("serve", "uvicorn"):
        if port is None:
            from pixsim7.backend.main.infrastructure.adapters.embedded import free_port

            port = free_port()
        argv += ["--host", "127.0.0.1", "--port", str(port)]
    name = name or command
    log = log or cwd / f"{name}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT)
    return BackendProcess(name, proc, log, port)


@dataclass(frozen=True)
class BackendRun:
    """A finished `pixsim7-backend` command."""

    returncode: int
    stdout: str
    stderr: str
    pid: int

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run_backend(args: Sequence[str], env: Mapping[str, str], cwd: Path,
                timeout: float = 60.0) -> BackendRun:
    """Run `pixsim7-backend <args>` to its end; a run longer than `timeout` is killed (with
    its process group) and fails the test."""
    proc = subprocess.Popen([str(CLI), *args], env=dict(env), cwd=cwd, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    stdout = stderr = ""
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signals.SIGKILL)
            proc.communicate(timeout=10)
            pytest.fail(f"`pixsim7-backend {' '.join(args)}` did not exit within {timeout}s")
    return BackendRun(proc.returncode, stdout, stderr, proc.pid)
