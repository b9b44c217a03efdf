"""Which test session owns the servers the kit started, and removal of what dead ones left.

A session is its process id plus that process's start time (a reused pid is another
session). Embedded server folders hold an `owner.json` marker; containers carry the
`pixsim7.kit.owner` label; every database the kit creates is named with
`PIXSIM7_TEST_DATABASE_PREFIX` and carries its owner in its comment, so a shared server (an
external one, a CI's service container) is cleaned by the next run as the embedded folders
are. Only leftovers whose owner process is gone are removed: concurrent sessions on the same
machine keep theirs. Sessions given their own `PIXSIM7_TEST_SERVICES_DIR` form their own
scope: they clean up after each other only.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pixsim7_testing.host import ENV_SERVICES_DIR, docker_available, memory_dir

MARKER = "owner.json"
ENV_DATABASE_PREFIX = "PIXSIM7_TEST_DATABASE_PREFIX"
DEFAULT_DATABASE_PREFIX = "pixsim7_"
OWNER_COMMENT = "pixsim7-kit owner="  # then the owner's label, in a database's comment
FOLDER_PREFIX = "pixsim7-kit-"
OWNER_LABEL = "pixsim7.kit.owner"
SCOPE_LABEL = "pixsim7.kit.scope"


def database_prefix() -> str:
    """What the name of every database the kit creates starts with (a shared server's naming
    rules): PIXSIM7_TEST_DATABASE_PREFIX, default `pixsim7_`."""
    prefix = os.environ.get(ENV_DATABASE_PREFIX) or DEFAULT_DATABASE_PREFIX
    if not re.fullmatch(r"[a-z][a-z0-9_]{0,29}", prefix):
        raise ValueError(f"{ENV_DATABASE_PREFIX}={prefix!r}: use lower-case letters, digits and "
                         "underscores, starting with a letter, at most 30 characters")
    return prefix


def owner_comment() -> str:
    """The comment that makes a database this session's."""
    return OWNER_COMMENT + SessionOwner.current().label()


def scope() -> str:
    """The cleanup scope of this process: its services dir, or `default`."""
    return os.environ.get(ENV_SERVICES_DIR) or "default"


def container_labels() -> dict[str, str]:
    """Labels that mark a container as this session's."""
    return {OWNER_LABEL: SessionOwner.current().label(), SCOPE_LABEL: scope()}


def process_start_time(pid: int) -> int | None:
    """The start time of `pid` in clock ticks since boot (Linux /proc), None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields 3 (state) and 22; the command name (field 2) may hold spaces: count from its ')'.
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else int(fields[19])


@dataclass(frozen=True)
class SessionOwner:
    """One test session: the process that started the servers, on this host."""

    pid: int
    started: int | None
    host: str

    @classmethod
    def current(cls) -> SessionOwner:
        return cls(os.getpid(), process_start_time(os.getpid()), socket.gethostname())

    def alive(self) -> bool:
        """False only when this host's owner process is gone (a foreign host's counts as alive)."""
        if self.host != socket.gethostname():
            return True
        if self.started is None:  # no /proc to read a start time from: the pid alone
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return False
            except PermissionError:
                pass  # alive, another user's
            return True
        return process_start_time(self.pid) == self.started

    def label(self) -> str:
        return f"{self.host}/{self.pid}/{self.started}"

    @classmethod
    def from_label(cls, text: str) -> SessionOwner:
        host, pid, started = text.rsplit("/", 2)
        return cls(int(pid), None if started == "None" else int(started), host)

    def mark(self, folder: Path) -> None:
        """Write the marker that makes `folder` this session's."""
        (folder / MARKER).write_text(json.dumps(asdict(self)))

    @classmethod
    def of_folder(cls, folder: Path) -> SessionOwner | None:
        try:
            return cls(**json.loads((folder / MARKER).read_text()))
        except (OSError, ValueError, TypeError):
            return None


def server_folders() -> list[Path]:
    """The kit's server folders in this scope: every place the embedded backend uses."""
    if os.environ.get(ENV_SERVICES_DIR):
        bases = {Path(os.environ[ENV_SERVICES_DIR])}
    else:
        bases = {Path(tempfile.gettempdir()), *([Path(memory_dir())] if memory_dir() else [])}
    return [folder for base in bases for folder in base.glob(f"{FOLDER_PREFIX}*")
            if folder.is_dir()]


def processes_in(folder: Path) -> list[int]:
    """Processes whose working directory is inside `folder` (servers chdir to their data)."""
    found: list[int] = []
    if not Path("/proc").is_dir():
        return found
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if Path(os.readlink(entry / "cwd")).is_relative_to(folder):
                found.append(int(entry.name))
    return found


def stop_processes(pids: list[int], grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL for any still running after `grace` seconds."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(process_start_time(p) for p in pids):
        time.sleep(0.05)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def reap_folders() -> tuple[list[str], int]:
    """Remove dead sessions' server folders and stop their servers: (folders, processes)."""
    folders, stopped = [], 0
    for folder in server_folders():
        owner = SessionOwner.of_folder(folder)
        if owner is None or owner.alive():
            continue  # unmarked (being created, or not the kit's) or a live session's
        pids = processes_in(folder.resolve())
        stop_processes(pids)
        shutil.rmtree(folder, ignore_errors=True)
        folders.append(str(folder))
        stopped += len(pids)
    return folders, stopped


def reap_containers() -> list[str]:
    """Remove this host's kit containers whose owner session is gone: their short ids."""
    if not docker_available():
        return []
    import docker

    client = docker.from_env()
    removed = []
    try:
        labels = [OWNER_LABEL, f"{SCOPE_LABEL}={scope()}"]
        for container in client.containers.list(all=True, filters={"label": labels}):
            try:
                if SessionOwner.from_label(container.labels[OWNER_LABEL]).alive():
                    continue
            except ValueError:
                continue  # not a label this kit wrote
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True, v=True)
                removed.append(container.short_id)
    finally:
        client.close()
    return removed


async def reap_databases(conn: Any, prefix: str) -> list[str]:
    """Drop the databases named with `prefix` whose owner (in their comment) is gone: what a
    killed session left on this server. Their names."""
    rows = await conn.fetch(
        "SELECT datname, datistemplate, shobj_description(d.oid, 'pg_database') AS note, "
        "(SELECT count(*) FROM pg_stat_activity a WHERE a.datid = d.oid) AS connected "
        "FROM pg_database d WHERE starts_with(datname, $1)", prefix)
    dropped = []
    for row in rows:
        note = row["note"] or ""
        if not note:
            # Named as the kit names its databases but not stamped: its session was killed
            # between CREATE DATABASE and the stamp, a moment later on the same connection
            # (a pool making databases ahead is often there). Unless someone uses it.
            if not row["datname"].startswith((f"{prefix}t_", f"{prefix}tpl_")) or (
                    row["connected"]):
                continue
        elif not note.startswith(OWNER_COMMENT):
            continue  # not one the kit made
        else:
            try:
                owner = SessionOwner.from_label(note[len(OWNER_COMMENT):])
            except ValueError:
                continue
            if owner.alive():
                continue
        name = row["datname"].replace('"', '""')
        if row["datistemplate"]:
            await conn.execute(f'ALTER DATABASE "{name}" WITH IS_TEMPLATE false')
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        dropped.append(row["datname"])
    return dropped


def reap_leftovers() -> str | None:
    """Remove what dead sessions left; one line saying what was removed, or None."""
    folders, processes = reap_folders()
    containers = reap_containers()
    if not (folders or containers):
        return None
    parts = []
    if folders:
        parts.append(f"{len(folders)} server folder(s) ({', '.join(folders)}) with "
                     f"{processes} server process(es)")
    if containers:
        parts.append(f"{len(containers)} container(s) ({', '.join(containers)})")
    return "pixsim7 kit: removed what a killed session left: " + "; ".join(parts)
