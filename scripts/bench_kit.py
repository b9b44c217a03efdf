"""Measure the testing kit: session start-up per backend and the per-test isolation cost.

Prints medians over N runs. The per-test cost is compared with a baseline measured in the same
run: one `SELECT 1` round trip on a fresh connection, so the ratio says how many plain
connections one isolated database plus Redis keyspace costs.

    .venv/bin/python scripts/bench_kit.py [--runs 20] [--external-db URL --external-redis URL]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg  # noqa: E402

from testing.isolation import create_database, drop_database, new_namespace  # noqa: E402
from testing.services import EmbeddedBackend, ExternalBackend, ServiceSet  # noqa: E402


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


async def isolation_cost(services: ServiceSet, runs: int) -> tuple[float, float]:
    """(median seconds for database + keyspace setup and teardown, median baseline)."""
    costs, baseline = [], []
    for _ in range(runs):
        started = time.perf_counter()
        conn = await asyncpg.connect(services.postgres.url())
        await conn.fetchval("SELECT 1")
        await conn.close()
        baseline.append(time.perf_counter() - started)

        started = time.perf_counter()
        database = await create_database(services.postgres)
        namespace = new_namespace(services.redis)
        client = namespace.client()
        await client.set(namespace.prefix + "k", "v")
        await client.aclose()
        await namespace.clear()
        await drop_database(database)
        costs.append(time.perf_counter() - started)
    return statistics.median(costs), statistics.median(baseline)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--starts", type=int, default=5)
    parser.add_argument("--external-db")
    parser.add_argument("--external-redis")
    args = parser.parse_args()

    backends = [("embedded", EmbeddedBackend)]
    if args.external_db and args.external_redis:
        backends.append(("external",
                         lambda: ExternalBackend(args.external_db, args.external_redis)))
    for name, make in backends:
        starts, stops = [], []
        services = None
        for _ in range(args.starts):
            started = time.perf_counter()
            services = make().start()
            starts.append(time.perf_counter() - started)
            if _ < args.starts - 1:
                stops.append(timed(services.stop))
        assert services is not None
        cost, base = asyncio.run(isolation_cost(services, args.runs))
        stops.append(timed(services.stop))
        print(f"{name}: PostgreSQL {services.postgres_version}, Redis {services.redis_version}")
        print(f"  session start-up: median {statistics.median(starts) * 1000:.0f} ms "
              f"over {args.starts}; stop {statistics.median(stops) * 1000:.0f} ms")
        print(f"  per-test database + keyspace: median {cost * 1000:.1f} ms over {args.runs}; "
              f"baseline connect+SELECT 1 {base * 1000:.1f} ms; ratio {cost / base:.1f}x")


if __name__ == "__main__":
    main()
