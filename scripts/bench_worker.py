"""The worker and the jobs API against arq itself, each ratio measured against its baseline in
the same run, in alternating rounds (the median of each side is compared):

    worker start   `pixsim7-backend worker` process start to its first job finished, against a
                   bare arq worker (`arq` command line, one trivial function);
    worker stop    SIGTERM to exit of an idle worker, against the bare arq worker;
    job overhead   trivial jobs per second, one worker, both at the same poll delay (a ratio
                   above 1 means ours is faster);
    enqueue        sequential POST /api/v1/jobs on one keep-alive connection against
                   ArqRedis.enqueue_job itself, per second; the requests are written and their
                   answers read on a plain socket (status, length, body, its job id checked),
                   so that what is measured is the server, not an HTTP client library (httpx
                   alone costs about 1 ms a request here, more than the server);
    ready          `pixsim7-backend serve` start to /ready 200 (database initialised), against a
                   bare FastAPI app under uvicorn opening one asyncpg connection and one Redis
                   ping before it answers;
    wait           the median time from enqueue to the job's start, our worker at its default
                   JOB_POLL_DELAY_SECONDS, jobs enqueued one at a time at random moments;
    floors         for `worker start` and `ready`, a fresh interpreter importing only the
                   libraries each side imports, none of this project's code: a floor under
                   those two ratios that no change to our code can go below. For `enqueue`
                   (measured with it), a minimal FastAPI app under uvicorn on the HTTP protocol
                   `serve` uses (h11): one route, the same body and answer models, the same
                   enqueue script, no middleware, no authentication.

This project's modules are compiled to bytecode first, as installing a wheel does (an editable
install under PYTHONDONTWRITEBYTECODE=1 would otherwise compile them at every start, while
every library it is compared with starts from its bytecode).

Runs on PostgreSQL and Redis servers given by URL (a database is made for the run and dropped;
keys live under fresh prefixes and are deleted).

    .venv/bin/python scripts/bench_worker.py [--rounds 3] [--jobs 400] [--postgres URL]
        [--redis URL] [--only start,stop,jobs,enqueue,ready,wait,floors]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from arq.constants import (
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
    retry_key_prefix,
)
from redis.asyncio import Redis

from pixsim7.backend.main.infrastructure.adapters.embedded import free_port
from pixsim7.backend.main.infrastructure.registries import jobs

BIN = Path(sys.executable).parent
POLL = 0.01  # the poll delay both workers get where they are compared

BARE_WORKER = '''
import json
import os
from arq.connections import RedisSettings
from arq.worker import func


async def noop(ctx, payload):
    return {"value": payload.get("value", 0)}


# As quiet as ours under LOG_LEVEL=WARNING: arq's command line otherwise writes two lines a job.
LOG_CONFIG = {"version": 1, "disable_existing_loggers": False,
              "root": {"level": "WARNING"}, "loggers": {"arq": {"level": "WARNING"}}}


class WorkerSettings:
    functions = [func(noop, name="noop")]
    queue_name = os.environ["BENCH_QUEUE"]
    redis_settings = RedisSettings.from_dsn(os.environ["REDIS_URL"])
    poll_delay = float(os.environ["BENCH_POLL"])
    # Jobs are queued as JSON, as the jobs API queues them (arq's own default is pickle).
    job_serializer = staticmethod(lambda record: json.dumps(record).encode())
    job_deserializer = staticmethod(json.loads)
'''

# The floor under `enqueue`: what FastAPI and uvicorn cost with nothing of ours around the route.
MINIMAL_APP = '''
import os
from contextlib import asynccontextmanager

from fastapi import FastAPI
from redis.asyncio import Redis

from pixsim7.backend.main.infrastructure.registries import jobs
# The body and answer models of POST /api/v1/jobs.
from pixsim7.backend.main.api.schemas import JobAccepted, JobIn


@asynccontextmanager
async def lifespan(app):
    app.state.redis = Redis.from_url(os.environ["REDIS_URL"])
    yield
    await app.state.redis.aclose()


app = FastAPI(lifespan=lifespan)


@app.get("/ready")
async def ready():
    return {"status": "ready"}


@app.post("/api/v1/jobs", status_code=202, response_model=JobAccepted)
async def enqueue(job: JobIn):
    job_id = await jobs.enqueue(app.state.redis, os.environ["REDIS_KEY_PREFIX"], job.kind,
                                job.payload, max_queued=10**9)
    return JobAccepted(id=job_id, kind=job.kind)
'''

BARE_APP = '''
import os
import asyncpg
from contextlib import asynccontextmanager
from fastapi import FastAPI
from redis.asyncio import Redis


@asynccontextmanager
async def lifespan(app):
    app.state.db = await asyncpg.connect(os.environ["BENCH_DATABASE_URL"])
    app.state.redis = Redis.from_url(os.environ["REDIS_URL"])
    await app.state.redis.ping()
    yield
    await app.state.db.close()
    await app.state.redis.aclose()


app = FastAPI(lifespan=lifespan)


@app.get("/ready")
async def ready():
    return {"status": "ready"}
'''


class Bench:
    def __init__(self, postgres: str, redis_url: str, folder: Path) -> None:
        self.admin_url, self.redis_url, self.folder = postgres, redis_url, folder
        self.database = f"bench_worker_{uuid.uuid4().hex[:8]}"
        self.database_url = f"{postgres.rsplit('/', 1)[0]}/{self.database}"
        self.redis = Redis.from_url(redis_url)
        self.prefixes: list[str] = []
        # arq keeps a job's own keys outside the queue's prefix (arq:job:<id>, arq:result:<id>):
        # each id queued here is remembered, so that cleanup leaves nothing in a shared Redis.
        self.job_ids: list[str] = []
        (folder / "bare_worker.py").write_text(BARE_WORKER)
        (folder / "bare_app.py").write_text(BARE_APP)
        (folder / "minimal_app.py").write_text(MINIMAL_APP)

    def prefix(self) -> str:
        self.prefixes.append(f"bench-{uuid.uuid4().hex[:8]}:")
        return self.prefixes[-1]

    def env(self, prefix: str, **more: str) -> dict[str, str]:
        return {**os.environ, "DATABASE_URL": self.database_url, "REDIS_URL": self.redis_url,
                "REDIS_KEY_PREFIX": prefix, "LOG_LEVEL": "WARNING",
                "SHUTDOWN_DRAIN_SECONDS": "0", "BENCH_QUEUE": jobs.queue_name(prefix),
                "BENCH_POLL": str(POLL), "BENCH_DATABASE_URL": self.database_url,
                "PYTHONPATH": str(self.folder), **more}

    def worker(self, bare: bool, prefix: str, **more: str) -> subprocess.Popen:
        argv = ([str(BIN / "arq"), "bare_worker.WorkerSettings",
                 "--custom-log-dict", "bare_worker.LOG_CONFIG"] if bare
                else [str(BIN / "pixsim7-backend"), "worker"])
        log = open(self.folder / f"{'bare' if bare else 'ours'}-{prefix}.log", "ab")  # noqa: SIM115
        return subprocess.Popen(argv, env=self.env(prefix, **more), cwd=self.folder,
                                stdout=log, stderr=subprocess.STDOUT)

    async def enqueue(self, prefix: str, count: int) -> list[str]:
        ids = [await jobs.enqueue(self.redis, prefix, "noop", {"value": n})
               for n in range(count)]
        self.job_ids += ids
        return ids

    async def done(self, prefix: str, timeout: float = 120.0) -> None:
        """Until the queue is empty (arq keeps a job queued until it ends)."""
        began = time.monotonic()
        while await jobs.queued(self.redis, prefix):
            if time.monotonic() - began > timeout:
                raise SystemExit(f"jobs not done within {timeout} s; see {self.folder}")
            await asyncio.sleep(0.002)

    async def start_to_first_job(self, bare: bool) -> float:
        prefix = self.prefix()
        await self.enqueue(prefix, 1)
        began = time.monotonic()
        proc = self.worker(bare, prefix)
        await self.done(prefix)
        elapsed = time.monotonic() - began
        stop(proc)
        return elapsed

    async def sigterm_to_exit(self, bare: bool) -> float:
        prefix = self.prefix()
        await self.enqueue(prefix, 1)
        proc = self.worker(bare, prefix)
        await self.done(prefix)
        await asyncio.sleep(0.3)  # idle
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 30)
        return time.monotonic() - began

    async def jobs_per_second(self, bare: bool, count: int) -> float:
        prefix = self.prefix()
        await self.enqueue(prefix, 1)
        proc = self.worker(bare, prefix, JOB_POLL_DELAY_SECONDS=str(POLL))
        await self.done(prefix)  # warm: the first job ran
        began = time.monotonic()
        await self.enqueue(prefix, count)
        await self.done(prefix)
        elapsed = time.monotonic() - began
        stop(proc)
        return count / elapsed

    async def enqueue_job_rate(self, count: int) -> float:
        """ArqRedis.enqueue_job itself, sequential, per second."""
        prefix = self.prefix()
        arq = jobs.arq_client(self.redis, prefix)
        began = time.monotonic()
        for n in range(count):
            job = await arq.enqueue_job("noop", {"value": n}, _queue_name=jobs.queue_name(prefix))
            self.job_ids.append(job.job_id)
        return count / (time.monotonic() - began)

    async def start_to_ready(self, bare: bool) -> float:
        port = free_port()
        argv = ([str(BIN / "uvicorn"), "bare_app:app", "--port", str(port), "--log-level",
                 "warning"] if bare else
                [str(BIN / "pixsim7-backend"), "serve", "--port", str(port)])
        log = open(self.folder / "ready.log", "ab")  # noqa: SIM115
        began = time.monotonic()
        proc = subprocess.Popen(argv, env=self.env(self.prefix()), cwd=self.folder, stdout=log,
                                stderr=subprocess.STDOUT)
        await until_ready(port, proc, self.folder / "ready.log")
        elapsed = time.monotonic() - began
        stop(proc)
        return elapsed

    async def waits(self, count: int) -> list[float]:
        """Enqueue-to-start of `count` jobs, one at a time, our worker idle in between."""
        prefix = self.prefix()
        await self.enqueue(prefix, 1)
        proc = self.worker(False, prefix)
        await self.done(prefix)
        found = []
        for _ in range(count):
            await asyncio.sleep(random.uniform(0.02, 0.15))
            job_id = (await self.enqueue(prefix, 1))[0]
            await self.done(prefix)
            info = await jobs.job_handle(self.redis, prefix, job_id).result_info()
            found.append((info.start_time - info.enqueue_time).total_seconds())
        stop(proc)
        return found

    async def setup(self) -> None:
        conn = await asyncpg.connect(self.admin_url)
        try:
            await conn.execute(f'CREATE DATABASE "{self.database}"')
        finally:
            await conn.close()
        # The schema and seed made once, so each start below finds the database initialised.
        subprocess.run([str(BIN / "pixsim7-backend"), "check"], env=self.env(self.prefix()),
                       cwd=self.folder, check=True, capture_output=True)

    async def cleanup(self) -> None:
        for prefix in self.prefixes:
            keys = [key async for key in self.redis.scan_iter(match=f"{prefix}*")]
            if keys:
                await self.redis.delete(*keys)
        for start in range(0, len(self.job_ids), 1000):
            await self.redis.delete(*(
                f"{kind}{job_id}" for job_id in self.job_ids[start:start + 1000]
                for kind in (job_key_prefix, result_key_prefix, in_progress_key_prefix,
                             retry_key_prefix)))
        await self.redis.aclose()
        conn = await asyncpg.connect(self.admin_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
        finally:
            await conn.close()


async def post_rate(port: int, count: int, job_ids: list[str]) -> float:
    """Sequential POST /api/v1/jobs per second on one keep-alive connection, each answer read
    whole and checked (202 and a job id, added to `job_ids`)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    began = time.monotonic()
    try:
        for n in range(count):
            body = json.dumps({"kind": "noop", "payload": {"value": n}}).encode()
            writer.write(b"POST /api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                         % (len(body), body))
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            answer = await reader.readexactly(length)
            job_id = json.loads(answer).get("id") if head.startswith(b"HTTP/1.1 202 ") else None
            if not job_id:
                raise SystemExit(f"POST /api/v1/jobs answered {head!r} {answer!r}")
            job_ids.append(job_id)
        return count / (time.monotonic() - began)
    finally:
        writer.close()


async def until_ready(port: int, proc: subprocess.Popen, log: Path | str) -> None:
    """Until GET /ready on `port` answers 200; SystemExit if `proc` ends or 60 s pass."""
    began = time.monotonic()
    async with httpx.AsyncClient() as client:
        while True:
            try:
                response = await client.get(f"http://127.0.0.1:{port}/ready", timeout=1)
                if response.status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() - began > 60:
                raise SystemExit(f"not ready; see {log}")
            await asyncio.sleep(0.005)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    proc.wait(30)


async def paired(rounds: int, measure: Callable[[bool], Awaitable[float]]) -> tuple[float, float]:
    """Medians of (ours, baseline), measured in alternating rounds."""
    ours, base = [], []
    for _ in range(rounds):
        ours.append(await measure(False))
        base.append(await measure(True))
    return statistics.median(ours), statistics.median(base)


MEASURES = ("start", "stop", "jobs", "enqueue", "ready", "wait", "floors")

# What each side of `worker start` and `ready` imports before it can do anything: the
# libraries only, none of this project's code. Their ratio is a floor under the measured one.
FLOORS = {
    "worker start": ("arq.worker, arq.connections",
              "arq.worker, arq.connections, sqlalchemy.ext.asyncio, asyncpg, pydantic_settings, "
              "fastapi, uvloop"),
    "ready": ("fastapi, uvicorn, asyncpg, redis.asyncio",
              "fastapi, uvicorn, asyncpg, redis.asyncio, sqlalchemy.ext.asyncio, "
              "pydantic_settings, arq.connections, prometheus_client, uvloop"),
}


async def import_seconds(modules: str) -> float:
    """Wall time of a fresh interpreter importing `modules` and exiting."""
    began = time.monotonic()
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", f"import {modules}")
    if await proc.wait():
        raise SystemExit(f"importing {modules} failed")
    return time.monotonic() - began


async def enqueue_rates(bench: Bench, rounds: int, count: int) -> tuple[float, float, float]:
    """Medians of (POST on `serve`, enqueue_job, POST on the minimal app), in alternating rounds
    against one `serve` and one minimal app, each started once and warmed up."""
    servers = {}
    try:
        for name, argv in (
                ("serve", [str(BIN / "pixsim7-backend"), "serve"]),
                ("minimal", [str(BIN / "uvicorn"), "minimal_app:app", "--http", "h11",
                             "--log-level", "warning"])):
            port = free_port()
            # Their prefix is the bench's, so cleanup removes the queue as it removes the others.
            servers[name] = port, subprocess.Popen(
                [*argv, "--port", str(port)],
                env=bench.env(bench.prefix(), JOBS_MAX_QUEUED="1000000"), cwd=bench.folder,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for port, proc in servers.values():
            await until_ready(port, proc, "(the servers' output is discarded here)")
            await post_rate(port, 50, bench.job_ids)  # warm: first requests build caches
        ours, base, floor = [], [], []
        for _ in range(rounds):
            ours.append(await post_rate(servers["serve"][0], count, bench.job_ids))
            base.append(await bench.enqueue_job_rate(count))
            floor.append(await post_rate(servers["minimal"][0], count, bench.job_ids))
        return statistics.median(ours), statistics.median(base), statistics.median(floor)
    finally:
        for _, proc in servers.values():
            stop(proc)


async def floors(rounds: int) -> dict[str, tuple[float, float]]:
    """Per floor, the medians of (the libraries ours imports, those its baseline imports)."""
    return {name: await paired(rounds * 2, lambda bare, mods=mods: import_seconds(
        mods[0] if bare else mods[1])) for name, mods in FLOORS.items()}


def compile_ours() -> None:
    """This project's bytecode, where a wheel's install would have written it."""
    import compileall

    import pixsim7

    for path in pixsim7.__path__:
        if not compileall.compile_dir(path, quiet=1):
            raise SystemExit(f"compiling {path} failed")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=400)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--only", default=",".join(MEASURES),
                        help=f"comma-separated, among {', '.join(MEASURES)}")
    args = parser.parse_args()
    only = args.only.split(",")
    if unknown := set(only) - set(MEASURES):
        parser.error(f"unknown measures: {', '.join(sorted(unknown))}")
    found: dict[str, Any] = {}
    compile_ours()
    with tempfile.TemporaryDirectory(prefix="bench-worker-") as folder:
        bench = Bench(args.postgres, args.redis, Path(folder))
        await bench.setup()
        try:
            measures = {
                "start": lambda: paired(args.rounds, bench.start_to_first_job),
                "stop": lambda: paired(args.rounds, bench.sigterm_to_exit),
                "jobs": lambda: paired(args.rounds,
                                       lambda bare: bench.jobs_per_second(bare, args.jobs)),
                "ready": lambda: paired(args.rounds, bench.start_to_ready),
                "floors": lambda: floors(args.rounds),
                "enqueue": lambda: enqueue_rates(bench, args.rounds, args.jobs),
                "wait": lambda: bench.waits(40),
            }
            for name in only:
                found[name] = await measures[name]()
        finally:
            await bench.cleanup()
    print(f"load average: {os.getloadavg()[0]:.2f}; medians of {args.rounds} alternating rounds")
    lines = {
        "start": lambda ours, base: f"worker start: {ours / base:.2f}x  ({ours:.2f} s against "
        f"bare arq {base:.2f} s, start to first job finished)",
        "stop": lambda ours, base: f"worker stop: {ours / base:.2f}x  ({ours:.2f} s against "
        f"{base:.2f} s, SIGTERM to exit, idle)",
        "jobs": lambda ours, base: f"job overhead: {ours / base:.2f}x  ({ours:.0f} against "
        f"{base:.0f} trivial jobs/s, one worker, poll delay {POLL} s)",
        "enqueue": lambda ours, base, floor: f"enqueue: {ours / base:.2f}x  ({ours:.0f} POST "
        f"/api/v1/jobs/s against {base:.0f} enqueue_job/s)\nenqueue floor: {floor / base:.2f}x"
        f"  (a minimal FastAPI app under uvicorn with h11, the same enqueue script: {floor:.0f}"
        " POST/s)",
        "ready": lambda ours, base: f"ready: {ours / base:.2f}x  ({ours:.2f} s against a bare "
        f"app {base:.2f} s, start to /ready 200)",
    }
    for name in only:
        if name in lines:
            print(lines[name](*found[name]))
    for name, (ours, base) in found.get("floors", {}).items():
        print(f"{name} floor: {ours / base:.2f}x  (an interpreter importing only the libraries "
              f"its side imports, no code of ours: {ours:.2f} s against {base:.2f} s)")
    if waits := found.get("wait"):
        print(f"wait: median {statistics.median(waits) * 1000:.1f} ms from enqueue to start "
              f"(max {max(waits) * 1000:.1f} ms, {len(waits)} jobs, JOB_POLL_DELAY_SECONDS "
              "default)")


if __name__ == "__main__":
    asyncio.run(main())
