"""The arq worker measured: trivial jobs per second with one and two workers, start-up time to
the first job, and the delay before a SIGKILLed worker's job runs again.

Runs real `pixsim7-backend worker` processes on PostgreSQL and Redis servers given by URL (a
database is made for the run and dropped; keys live under a fresh prefix and are deleted).
Baselines, measured in the same run: one worker's rate for two workers; `pixsim7-backend check
--help` (interpreter start plus imports) for the start-up; JOB_TIMEOUT_SECONDS + 10 s, arq's
in-progress mark, for the redelivery delay.

    .venv/bin/python scripts/bench_worker.py [--jobs 400] [--postgres URL] [--redis URL]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
from redis.asyncio import Redis

from pixsim7.backend.main.infrastructure import jobs

BIN = Path(__file__).resolve().parent.parent / ".venv" / "bin" / "pixsim7-backend"
JOB_TIMEOUT = 1.0


class Bench:
    def __init__(self, postgres: str, redis_url: str, folder: Path) -> None:
        self.admin_url, self.redis_url, self.folder = postgres, redis_url, folder
        self.database = f"bench_worker_{uuid.uuid4().hex[:8]}"
        self.prefix = f"bench-{uuid.uuid4().hex[:8]}:"
        self.redis = Redis.from_url(redis_url)
        self.procs: list[subprocess.Popen] = []

    def env(self, **more: str) -> dict[str, str]:
        base = self.admin_url.rsplit("/", 1)[0]
        return {**os.environ, "DATABASE_URL": f"{base}/{self.database}",
                "REDIS_URL": self.redis_url, "REDIS_KEY_PREFIX": self.prefix,
                "LOG_LEVEL": "WARNING", "SHUTDOWN_DRAIN_SECONDS": "0", **more}

    def start(self, **more: str) -> subprocess.Popen:
        log = open(self.folder / f"worker-{len(self.procs)}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen([str(BIN), "worker"], env=self.env(**more), cwd=self.folder,
                                stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    async def enqueue(self, count: int, seconds: float = 0.0) -> list[str]:
        return [await jobs.enqueue(self.redis, self.prefix, "noop",
                                   {"value": n, "seconds": seconds}) for n in range(count)]

    async def statuses(self, ids: list[str]) -> list[str]:
        return [(await jobs.job_state(self.redis, self.prefix, i))["status"] for i in ids]

    async def wait_done(self, ids: list[str], timeout: float = 120.0) -> float:
        """Seconds until the queue is empty; then every job in `ids` must have completed."""
        began = time.monotonic()
        while await jobs.queued(self.redis, self.prefix):  # arq keeps a job queued until it ends
            if time.monotonic() - began > timeout:
                raise SystemExit(f"jobs not done within {timeout} s")
            await asyncio.sleep(0.01)
        elapsed = time.monotonic() - began
        if set(await self.statuses(ids)) != {"complete"}:
            raise SystemExit("a job did not complete; see the worker logs")
        return elapsed

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            proc.wait(30)
        self.procs = []

    async def rate(self, workers: int, count: int) -> float:
        """Jobs per second, from the first enqueue to the last completion, workers warm."""
        for _ in range(workers):
            self.start()
        # Every worker polling the queue (its health record written), or the first one up
        # would run the whole batch alone.
        began = time.monotonic()
        while len(await jobs.workers(self.redis, self.prefix)) < workers:
            if time.monotonic() - began > 60:
                raise SystemExit(f"{workers} workers did not start within 60 s")
            await asyncio.sleep(0.02)
        warmup = await self.enqueue(workers * 4)
        await self.wait_done(warmup)
        began = time.monotonic()
        ids = await self.enqueue(count)
        await self.wait_done(ids)
        elapsed = time.monotonic() - began
        self.stop_all()
        return count / elapsed

    async def first_job(self) -> float:
        """Seconds from starting a worker process to its first job completing."""
        ids = await self.enqueue(1)
        self.start()
        elapsed = await self.wait_done(ids)
        self.stop_all()
        return elapsed

    async def redelivery(self) -> float:
        """Seconds from SIGKILL of a worker running a job to that job completing elsewhere."""
        worker = self.start(JOB_TIMEOUT_SECONDS=str(JOB_TIMEOUT))
        ids = await self.enqueue(1, seconds=0.9 * JOB_TIMEOUT)
        while (await self.statuses(ids)) != ["in_progress"]:
            await asyncio.sleep(0.01)
        worker.kill()
        worker.wait(10)
        killed = time.monotonic()
        self.start(JOB_TIMEOUT_SECONDS=str(JOB_TIMEOUT))
        await self.wait_done(ids)
        elapsed = time.monotonic() - killed
        self.stop_all()
        return elapsed

    async def setup(self) -> None:
        conn = await asyncpg.connect(self.admin_url)
        try:
            await conn.execute(f'CREATE DATABASE "{self.database}"')
        finally:
            await conn.close()

    async def cleanup(self) -> None:
        self.stop_all()
        keys = [key async for key in self.redis.scan_iter(match=f"{self.prefix}*")]
        if keys:
            await self.redis.delete(*keys)
        await self.redis.aclose()
        conn = await asyncpg.connect(self.admin_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
        finally:
            await conn.close()


def baseline_start() -> float:
    began = time.monotonic()
    subprocess.run([str(BIN), "check", "--help"], check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - began


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=400)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-worker-") as folder:
        bench = Bench(args.postgres, args.redis, Path(folder))
        await bench.setup()
        try:
            one = await bench.rate(1, args.jobs)
            two = await bench.rate(2, args.jobs)
            imports = baseline_start()
            first = await bench.first_job()
            again = await bench.redelivery()
        finally:
            await bench.cleanup()
    print(f"load average: {os.getloadavg()[0]:.2f}")
    print(f"trivial jobs/s, 1 worker: {one:.1f}")
    print(f"trivial jobs/s, 2 workers: {two:.1f} ({two / one:.2f}x one worker)")
    print(f"start-up to first job: {first:.2f} s ({first / imports:.2f}x `check --help`, "
          f"{imports:.2f} s)")
    mark = JOB_TIMEOUT + 10
    print(f"killed worker's job ran again after: {again:.2f} s "
          f"({again / mark:.2f}x JOB_TIMEOUT_SECONDS + 10 s = {mark:g} s)")


if __name__ == "__main__":
    asyncio.run(main())
