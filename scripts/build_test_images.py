"""Build PostgreSQL and Redis images for the testing kit without an image registry.

Each image is a bare root filesystem holding the server binaries this machine installed from
Debian's packages (`postgresql-NN`, `redis-server`), the shared libraries they load and a
static busybox (`busybox-static`), imported with `docker import`. The PostgreSQL image behaves
as testcontainers' `PostgresContainer` expects of the official one (POSTGRES_USER / _PASSWORD
/ _DB, initdb on first start, `postgres -c ...` passed through, `sh` and `psql` inside). Tags
carry the server versions; an image that already exists is left alone. Prints the env lines
that make the kit use them.

Usage: python scripts/build_test_images.py [--repository pixsim7-local]
"""

from __future__ import annotations

import argparse
import io
import re
import subprocess
import sys
import tarfile
import time
from pathlib import Path

SERVER_UID = 999  # the official images' postgres / redis user id
BUSYBOX_APPLETS = ("sh", "cat", "echo", "env", "id", "ls", "mkdir", "rm", "chmod", "sleep")

POSTGRES_ENTRYPOINT = r"""#!/bin/sh
# First start: initdb from POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB, as the official
# image does; then `postgres ARGS` (or bare `-c ...` flags) runs the server listening on all
# interfaces, and any other command runs as given.
set -e
if [ "${1#-}" != "$1" ]; then set -- postgres "$@"; fi
if [ "$1" != postgres ]; then exec "$@"; fi
shift
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    : "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set (the server accepts passwords only)}"
    user="${POSTGRES_USER:-postgres}"
    pwfile=/tmp/pwfile
    printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
    initdb -D "$PGDATA" -U "$user" --pwfile="$pwfile" -E UTF8 --locale=C \
        --auth-local=trust --auth-host=scram-sha-256 --no-sync > /dev/null
    rm -f "$pwfile"
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    db="${POSTGRES_DB:-$user}"
    if [ "$db" != postgres ]; then
        echo "CREATE DATABASE \"$db\"" | postgres --single -D "$PGDATA" postgres > /dev/null
    fi
fi
exec postgres -D "$PGDATA" -c listen_addresses='*' "$@"
"""


class BuildError(RuntimeError):
    """The images cannot be built here; the message says what is missing."""


def run(*args: str, **kwargs) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True, **kwargs).stdout


def shared_libraries(binaries: list[Path]) -> set[Path]:
    """Every shared library (and the loader) the binaries load, as ldd resolves them here."""
    found: set[Path] = set()
    for binary in binaries:
        result = subprocess.run(["ldd", str(binary)], capture_output=True, text=True)
        if "not a dynamic executable" in result.stdout + result.stderr:
            continue
        for line in result.stdout.splitlines():
            if "not found" in line:
                raise BuildError(f"{binary} needs {line.split()[0]}, not installed here")
            match = re.search(r"(/\S+) \(0x", line)
            if match:
                found.add(Path(match.group(1)))
    return found


class RootFs:
    """A root filesystem written straight into a tar stream for `docker import`."""

    def __init__(self) -> None:
        self.buffer = io.BytesIO()
        self.tar = tarfile.TarFile(fileobj=self.buffer, mode="w")
        self.paths: set[str] = set()

    def _info(self, path: str, kind: bytes, mode: int, uid: int = 0) -> tarfile.TarInfo:
        info = tarfile.TarInfo(path.lstrip("/"))
        info.type, info.mode, info.uid, info.gid, info.mtime = kind, mode, uid, uid, 0
        return info

    def directory(self, path: str, mode: int = 0o755, uid: int = 0) -> None:
        parts = Path(path).parts[1:]
        for depth in range(1, len(parts) + 1):
            current = "/" + "/".join(parts[:depth])
            if current not in self.paths:
                self.paths.add(current)
                leaf = depth == len(parts)
                self.tar.addfile(self._info(current, tarfile.DIRTYPE, mode if leaf else 0o755,
                                            uid if leaf else 0))

    def file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        if path in self.paths:
            return
        self.directory(str(Path(path).parent))
        self.paths.add(path)
        info = self._info(path, tarfile.REGTYPE, mode)
        info.size = len(data)
        self.tar.addfile(info, io.BytesIO(data))

    def copy(self, source: Path, target: str | None = None) -> None:
        """A host file (symlinks followed) or a whole folder, at the same path by default."""
        target = target or str(source)
        if source.is_dir():
            for item in sorted(source.rglob("*")):
                if item.is_file():
                    self.copy(item, target + "/" + str(item.relative_to(source)))
            return
        self.file(target, source.read_bytes(), source.stat().st_mode & 0o777)

    def link(self, path: str, target: str) -> None:
        self.directory(str(Path(path).parent))
        self.paths.add(path)
        info = self._info(path, tarfile.SYMTYPE, 0o777)
        info.linkname = target
        self.tar.addfile(info)

    def base(self, user: str) -> None:
        """Users, /tmp and a static busybox providing sh and a few tools."""
        self.file("/etc/passwd", f"root:x:0:0:root:/root:/bin/sh\n"
                  f"{user}:x:{SERVER_UID}:{SERVER_UID}:{user}:/tmp:/bin/sh\n".encode())
        self.file("/etc/group", f"root:x:0:\n{user}:x:{SERVER_UID}:\n".encode())
        self.directory("/tmp", 0o1777)
        busybox = Path("/bin/busybox")
        if not busybox.exists() or shared_libraries([busybox]):
            raise BuildError("no static busybox at /bin/busybox: apt-get install busybox-static")
        self.copy(busybox, "/usr/local/bin/busybox")
        for applet in BUSYBOX_APPLETS:
            self.link(f"/usr/local/bin/{applet}", "busybox")
        self.link("/bin/sh", "/usr/local/bin/busybox")

    def close(self) -> bytes:
        self.tar.close()
        return self.buffer.getvalue()


def postgres_source() -> tuple[Path, str]:
    """The newest PostgreSQL that Debian's package installed here: (bin dir, version)."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"),
                        key=lambda p: int(p.parent.parent.name))
    if not candidates:
        raise BuildError("no PostgreSQL server here: apt-get install postgresql")
    bin_dir = candidates[-1].parent
    out = run(str(bin_dir / "postgres"), "--version")
    return bin_dir, re.search(r"\(PostgreSQL\) (\d+(?:\.\d+)*)", out).group(1)


def redis_source() -> tuple[Path, str]:
    binary = Path("/usr/bin/redis-server")
    if not binary.exists():
        raise BuildError("no Redis server here: apt-get install redis-server")
    return binary, re.search(r"v=(\S+)", run(str(binary), "--version")).group(1)


def postgres_rootfs(bin_dir: Path) -> bytes:
    major = bin_dir.parent.name
    lib_dir, share_dir = bin_dir.parent / "lib", Path(f"/usr/share/postgresql/{major}")
    tools = [bin_dir / name for name in ("postgres", "initdb", "psql", "pg_ctl", "pg_isready")]
    # Server modules loaded at run time (plpgsql, encodings); the LLVM JIT is left out.
    modules = [m for m in lib_dir.glob("*.so") if m.name != "llvmjit.so"]
    fs = RootFs()
    fs.base("postgres")
    for path in [*tools, *modules, *shared_libraries(tools + modules)]:
        fs.copy(path)
    fs.copy(share_dir)
    fs.copy(Path("/usr/share/zoneinfo/UTC"))
    fs.copy(Path("/usr/share/zoneinfo/Etc/UTC"))
    fs.directory("/var/lib/postgresql/data", 0o700, SERVER_UID)
    fs.directory("/var/run/postgresql", 0o2775, SERVER_UID)
    fs.file("/usr/local/bin/docker-entrypoint.sh", POSTGRES_ENTRYPOINT.encode(), 0o755)
    return fs.close()


def redis_rootfs(binary: Path) -> bytes:
    fs = RootFs()
    fs.base("redis")
    for path in [binary, *shared_libraries([binary])]:
        fs.copy(path)
    fs.directory("/data", 0o755, SERVER_UID)
    return fs.close()


def image_exists(tag: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", tag], capture_output=True).returncode == 0


def docker_import(tag: str, rootfs: bytes, changes: list[str]) -> None:
    args = ["docker", "import"]
    for change in changes:
        args += ["--change", change]
    subprocess.run([*args, "-", tag], input=rootfs, check=True, capture_output=True)


def build(repository: str) -> dict[str, str]:
    """Build what is missing; returns the env settings that select the two images."""
    if subprocess.run(["docker", "version"], capture_output=True).returncode != 0:
        raise BuildError("no Docker engine answered (DOCKER_HOST or the default socket): "
                         "start one first")
    pg_bin, pg_version = postgres_source()
    redis_bin, redis_version = redis_source()
    pg_tag, redis_tag = f"{repository}/postgres:{pg_version}", f"{repository}/redis:{redis_version}"
    path = f"PATH={pg_bin}:/usr/local/bin:/usr/bin:/bin"
    images = [
        (pg_tag, lambda: postgres_rootfs(pg_bin), [
            f"ENV {path}", f"ENV PG_VERSION={pg_version}",
            "ENV PGDATA=/var/lib/postgresql/data", "USER postgres", "EXPOSE 5432",
            'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]', 'CMD ["postgres"]']),
        (redis_tag, lambda: redis_rootfs(redis_bin), [
            "ENV PATH=/usr/local/bin:/usr/bin:/bin", f"ENV REDIS_VERSION={redis_version}",
            "USER redis", "WORKDIR /data", "EXPOSE 6379",
            'CMD ["redis-server", "--protected-mode", "no", "--save", "", "--appendonly", "no"]']),
    ]
    for tag, rootfs, changes in images:
        if image_exists(tag):
            print(f"{tag}: already built")
            continue
        started = time.monotonic()
        docker_import(tag, rootfs(), changes)
        print(f"{tag}: built in {time.monotonic() - started:.1f}s")
    return {"PIXSIM7_TEST_POSTGRES_IMAGE": pg_tag, "PIXSIM7_TEST_REDIS_IMAGE": redis_tag}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", default="pixsim7-local",
                        help="image name prefix (default: pixsim7-local)")
    args = parser.parse_args()
    try:
        env = build(args.repository)
    except BuildError as exc:
        print(f"build_test_images: {exc}", file=sys.stderr)
        return 1
    except FileNotFoundError as exc:
        print(f"build_test_images: {exc.filename} not found (Debian: apt-get install docker.io)",
              file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as exc:
        stderr = exc.stderr.decode() if isinstance(exc.stderr, bytes) else exc.stderr or ""
        print(f"build_test_images: {' '.join(exc.cmd[:2])} failed: {stderr.strip()}",
              file=sys.stderr)
        return 1
    for name, value in env.items():
        print(f"{name}={value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
