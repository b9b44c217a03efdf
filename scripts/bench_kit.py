"""Measure the testing kit per backend: session start-up and stop, and one isolated app.

For each backend (embedded always; external with --external-db and --external-redis;
testcontainers when a Docker engine answers, with PIXSIM7_TEST_POSTGRES_IMAGE /
PIXSIM7_TEST_REDIS_IMAGE if set) it prints the median cost of one isolated app (database +
Redis keyspace + build + startup + one /ready + shutdown + drop), on an empty database and on a
clone of the run's template, as a ratio to a bare CREATE DATABASE + DROP DATABASE pair measured
in the same run on the same server. The three are measured in turn, so load hits all alike.
Each backend's lines end with `P1 <backend> <path>: N.NNx`; above them, the template path's
parts (medians, so they need not add up exactly) and the load average when it finished.

    .venv/bin/python scripts/bench_kit.py [--runs 25] [--starts 3]
        [--external-db postgresql://... --external-redis redis://...]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pixsim7.backend.main.main import create_app  # noqa: E402
from pixsim7.backend.main.shared.config import Settings  # noqa: E402
from testing.apps import start_app  # noqa: E402
from testing.isolation import (  # noqa: E402
    admin_connection,
    create_database,
    drop_database,
    new_namespace,
    ssl_negotiation_skipped,
)
from testing.services import (  # noqa: E402
    EmbeddedBackend,
    ExternalBackend,
    ServiceSet,
    TestcontainersBackend,
    docker_available,
)
from testing.template import TemplateDatabase, template_name  # noqa: E402


async def bare_pair(services: ServiceSet, admin) -> None:
    database = await create_database(services.postgres, admin=admin)
    await drop_database(database, admin)


async def isolated_app(services: ServiceSet, admin, template: TemplateDatabase | None,
                       parts: dict[str, list[float]]) -> None:
    """What one test with an app costs, as the kit's fixtures do it; each part's seconds are
    appended to `parts`."""
    mark = time.perf_counter()

    def lap(part: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        parts.setdefault(part, []).append(now - mark)
        mark = now

    if template is not None:
        database = await template.clone(admin)
    else:
        database = await create_database(services.postgres, admin=admin)
    lap("database")
    namespace = new_namespace(services.redis)
    settings = Settings(
        _env_file=None, debug=True, database_url=database.sqlalchemy_url,
        redis_url=namespace.url, redis_key_prefix=namespace.prefix, secret_key="bench",
        admin_token="bench", data_dir=Path(tempfile.gettempdir()) / "pixsim7-bench",
    )
    running = await start_app(create_app, settings)
    assert running.started, running.startup_error
    lap("build+startup")
    response = await running.get("/ready")
    assert response.status_code == 200, response.text
    lap("/ready")
    await running.stop()
    lap("shutdown")
    await namespace.clear()
    await drop_database(database, admin)
    lap("keyspace+drop")


async def measure(services: ServiceSet, template: TemplateDatabase,
                  runs: int) -> tuple[dict[str, float], dict[str, float]]:
    """Median seconds of each path over `runs` rounds, and of each part of the template path;
    one warm-up round is not counted."""
    parts: dict[str, list[float]] = {}
    paths: dict[str, Callable] = {
        "pair": lambda admin: bare_pair(services, admin),
        "empty": lambda admin: isolated_app(services, admin, None, {}),
        "template": lambda admin: isolated_app(services, admin, template, parts),
    }
    samples: dict[str, list[float]] = {name: [] for name in paths}
    admin = await admin_connection(services.postgres)
    try:
        for round_number in range(runs + 1):
            if round_number == 1:
                parts.clear()
            for name, path in paths.items():
                started = time.perf_counter()
                await path(admin)
                if round_number:
                    samples[name].append(time.perf_counter() - started)
    finally:
        await admin.close()
    return ({name: statistics.median(values) for name, values in samples.items()},
            {name: statistics.median(values) for name, values in parts.items()})


def backends(args: argparse.Namespace) -> list[tuple[str, Callable[[], object]]]:
    chosen: list[tuple[str, Callable[[], object]]] = [("embedded", EmbeddedBackend)]
    if args.external_db and args.external_redis:
        chosen.append(("external",
                       lambda: ExternalBackend(args.external_db, args.external_redis)))
    if docker_available():
        images = {key: value for key, value in (
            ("postgres_image", os.environ.get("PIXSIM7_TEST_POSTGRES_IMAGE")),
            ("redis_image", os.environ.get("PIXSIM7_TEST_REDIS_IMAGE"))) if value}
        chosen.append(("testcontainers", lambda: TestcontainersBackend(**images)))
    return chosen


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def run_backend(name: str, make: Callable[[], object], args: argparse.Namespace) -> None:
    starts, stops = [], []
    for _ in range(args.starts - 1):
        seconds, services = timed(make().start)
        starts.append(seconds)
        stops.append(timed(services.stop)[0])
    seconds, services = timed(make().start)
    starts.append(seconds)
    try:
        with ssl_negotiation_skipped(services.postgres):  # as the kit's fixtures do
            template = TemplateDatabase(services.postgres, template_name(uuid.uuid4().hex))
            made, _ = timed(template.acquire)
            try:
                medians, parts = asyncio.run(measure(services, template, args.runs))
            finally:
                template.release()
    finally:
        stops.append(timed(services.stop)[0])
    pair = medians["pair"]
    print(f"{name}: PostgreSQL {services.postgres_version}, Redis {services.redis_version}")
    print(f"  session start-up {statistics.median(starts) * 1000:.0f} ms, "
          f"stop {statistics.median(stops) * 1000:.0f} ms (medians of {args.starts}); "
          f"template made in {made * 1000:.0f} ms")
    print(f"  bare CREATE + DROP pair: {pair * 1000:.1f} ms (medians of {args.runs}; "
          f"load average {os.getloadavg()[0]:.1f})")
    print(f"  empty {medians['empty'] * 1000:.1f} ms; template {medians['template'] * 1000:.1f}"
          " ms = " + " + ".join(f"{part} {seconds * 1000:.1f}" for part, seconds in parts.items()))
    for path in ("empty", "template"):
        print(f"P1 {name} {path}: {medians[path] / pair:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=25)
    parser.add_argument("--starts", type=int, default=3)
    parser.add_argument("--external-db")
    parser.add_argument("--external-redis")
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # the apps' startup logs would drown the results
    for name, make in backends(args):
        run_backend(name, make, args)


if __name__ == "__main__":
    main()
