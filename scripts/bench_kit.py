"""Measure the testing kit per backend: session start-up and stop, and one test per tier.

The backends are those the pytest run would use: PIXSIM7_TEST_SERVICES names one, or with
`auto` (the default) embedded always, external when PIXSIM7_TEST_DATABASE_URL and
PIXSIM7_TEST_REDIS_URL are set (or --external-db and --external-redis), testcontainers when a
Docker engine answers (PIXSIM7_TEST_POSTGRES_IMAGE / PIXSIM7_TEST_REDIS_IMAGE if set).

For each it prints the median cost of one test that gets an app and sends it one /ready, as
the kit's fixtures do it, in each tier: `empty` and `template` (database + Redis keyspace +
build + startup + the request + shutdown + drop, on an empty database or a clone of the
run's template) and `rollback` (a transaction on the worker's started app + the request +
rollback and cleanup), each as a ratio to a bare CREATE DATABASE + DROP DATABASE pair measured
in the same run on the same server: `P1 <backend> <tier>: N.NNx`. Then the same for a test
whose body posts a preset through the app and lists the presets back, rollback against
template: `P1 <backend> post-and-read rollback/template: N.NNx`. Every path is measured in
turn, round after round, so load hits all alike; above the P1 lines, the parts of the
template and rollback paths (medians, so they need not add up exactly) and the load average.

And the floor of the template path: the same test on an app with no plugins and no middleware
(their folders empty), what the app's core alone costs on a clone (connections to the
database and Redis, FastAPI's first request, shutdown), as a ratio to the pair.

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

from pixsim7_testing.apps import start_app  # noqa: E402
from pixsim7_testing.inventory import Normalizer  # noqa: E402
from pixsim7_testing.isolation import (  # noqa: E402
    DatabaseJanitor,
    IsolatedDatabase,
    admin_connection,
    create_database,
    drop_database,
    new_namespace,
    ssl_negotiation_skipped,
)
from pixsim7_testing.pool import DatabasePool, pool_size  # noqa: E402
from pixsim7_testing.rollback import RollbackScope, SharedApps  # noqa: E402
from pixsim7_testing.services import (  # noqa: E402
    ENV_BACKEND,
    ENV_DATABASE_URL,
    ENV_POSTGRES_IMAGE,
    ENV_REDIS_IMAGE,
    ENV_REDIS_URL,
    EmbeddedBackend,
    ExternalBackend,
    ServiceSet,
    TestcontainersBackend,
    docker_available,
)
from pixsim7_testing.template import TemplateClones, TemplateDatabase, template_name  # noqa: E402

from pixsim7.backend.main.main import create_app  # noqa: E402
from pixsim7.backend.main.shared.config import Settings  # noqa: E402

DATA_DIR = Path(tempfile.gettempdir()) / "pixsim7-bench"
EMPTY_DIR = DATA_DIR / "no-plugins"  # an empty folder: the floor's app discovers nothing
PRESET = {"provider_id": "pixverse", "operation": "text_to_video"}


async def bare_pair(services: ServiceSet, admin) -> None:
    """The baseline: CREATE DATABASE and DROP DATABASE, nothing else."""
    database = await create_database(services.postgres, admin=admin)
    await drop_database(database, admin)


def settings_for(database: IsolatedDatabase, namespace, cloned: bool = True,
                 core_only: bool = False) -> Settings:
    """As make_settings makes them: on a clone of the template, no seeding (it holds it).
    `core_only`: no plugins and no middleware (their folders empty), for the floor."""
    folders = dict.fromkeys(("feature_plugins_dir", "route_plugins_dir", "middleware_dir"),
                            EMPTY_DIR) if core_only else {}
    return Settings(
        _env_file=None, debug=True, database_url=database.sqlalchemy_url,
        redis_url=namespace.url, redis_key_prefix=namespace.prefix, secret_key="bench",
        admin_token="bench", data_dir=DATA_DIR, seed_default_presets=not cloned, **folders,
    )


class Laps:
    """Seconds of each part of one path, appended to `parts`."""

    def __init__(self, parts: dict[str, list[float]]) -> None:
        self.parts, self.mark = parts, time.perf_counter()

    def __call__(self, part: str) -> None:
        now = time.perf_counter()
        self.parts.setdefault(part, []).append(now - self.mark)
        self.mark = now


async def ready(running) -> None:
    response = await running.get("/ready")
    assert response.status_code == 200, response.text


async def post_and_read(running) -> None:
    name = uuid.uuid4().hex
    created = await running.client.post("/api/v1/presets", json={"name": name, **PRESET})
    assert created.status_code == 201, created.text
    listed = await running.get("/api/v1/presets")
    assert name in {preset["name"] for preset in listed.json()}


async def isolated_app(services: ServiceSet, admin, template: TemplateDatabase | None,
                       parts: dict[str, list[float]], body=ready,
                       pool: DatabasePool | None = None, core_only: bool = False) -> None:
    """One test with an app of its own, as the kit's fixtures do it (empty or template): its
    database from the worker's pool, given back to be dropped off the path (or, with no pool,
    made and dropped on the path)."""
    lap = Laps(parts)
    if pool is None:
        janitor = (template.janitor(admin) if template is not None
                   else DatabaseJanitor(services.postgres, admin=admin))
        async with janitor as database:
            await app_test(services, database, lap, body, template is not None, core_only)
    else:
        database = await pool.take()
        try:
            await app_test(services, database, lap, body, template is not None, core_only)
        finally:
            pool.give_back(database)
    lap("keyspace+drop")


async def app_test(services: ServiceSet, database: IsolatedDatabase, lap: Laps, body,
                   cloned: bool, core_only: bool = False) -> None:
    lap("database")
    namespace = new_namespace(services.redis)
    running = await start_app(create_app, settings_for(database, namespace, cloned, core_only))
    assert running.started, running.startup_error
    lap("build+startup")
    await body(running)
    lap("request")
    await running.stop()
    lap("shutdown")
    await namespace.clear()


async def rollback_test(apps: SharedApps, parts: dict[str, list[float]], body=ready) -> None:
    """One test of the rollback tier on the worker's started app, as app_factory does it."""
    lap = Laps(parts)
    settings = apps.settings(lambda: settings_for(apps.database, apps.namespace))
    shared = await apps.get(create_app, settings)
    scope = RollbackScope(apps)
    running = await scope.take(shared)
    lap("transaction")
    await body(running)
    lap("request")
    await running.release()
    await scope.close()
    lap("rollback+cleanup")


async def measure(services: ServiceSet, template: TemplateDatabase, runs: int
                  ) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Median seconds of each path over `runs` rounds, and of the parts of two of them; one
    warm-up round is not counted."""
    parts: dict[str, dict[str, list[float]]] = {"template": {}, "rollback": {}, "floor": {}}
    EMPTY_DIR.mkdir(parents=True, exist_ok=True)
    admin = await admin_connection(services.postgres)
    apps = SharedApps(TemplateClones(template, admin), new_namespace(services.redis), DATA_DIR,
                      Normalizer())
    await apps.open()
    size = pool_size()
    empty_pool = DatabasePool(services.postgres, size=size) if size else None
    clones = (DatabasePool(services.postgres, template=template.name,
                           strategy=template.clone_strategy, size=size) if size else None)
    paths: dict[str, Callable] = {
        "pair": lambda: bare_pair(services, admin),
        "empty": lambda: isolated_app(services, admin, None, {}, pool=empty_pool),
        "template": lambda: isolated_app(services, admin, template, parts["template"],
                                         pool=clones),
        "floor": lambda: isolated_app(services, admin, template, parts["floor"], pool=clones,
                                      core_only=True),
        "rollback": lambda: rollback_test(apps, parts["rollback"]),
        "post-and-read template": lambda: isolated_app(services, admin, template, {},
                                                       post_and_read, pool=clones),
        "post-and-read rollback": lambda: rollback_test(apps, {}, post_and_read),
    }
    samples: dict[str, list[float]] = {name: [] for name in paths}
    try:
        for round_number in range(runs + 1):
            if round_number == 1:
                for kept in parts.values():
                    kept.clear()
            for name, path in paths.items():
                started = time.perf_counter()
                await path()
                if round_number:
                    samples[name].append(time.perf_counter() - started)
    finally:
        try:
            await apps.shut()
        finally:
            for pool in (empty_pool, clones):
                if pool is not None:
                    await asyncio.to_thread(pool.close)
            await admin.close()
    return ({name: statistics.median(values) for name, values in samples.items()},
            {path: {name: statistics.median(values) for name, values in kept.items()}
             for path, kept in parts.items()})


def backends(args: argparse.Namespace) -> list[tuple[str, Callable[[], object]]]:
    """The backends the pytest run would use, as PIXSIM7_TEST_SERVICES and its URLs say."""
    choice = os.environ.get(ENV_BACKEND, "auto").strip().lower() or "auto"
    database_url = args.external_db or os.environ.get(ENV_DATABASE_URL)
    redis_url = args.external_redis or os.environ.get(ENV_REDIS_URL)
    images = {key: value for key, value in (
        ("postgres_image", os.environ.get(ENV_POSTGRES_IMAGE)),
        ("redis_image", os.environ.get(ENV_REDIS_IMAGE))) if value}
    every = {
        "embedded": EmbeddedBackend,
        "external": lambda: ExternalBackend(database_url, redis_url),
        "testcontainers": lambda: TestcontainersBackend(**images),
    }
    if choice != "auto":
        return [(choice, every[choice])]
    chosen = ["embedded"]
    if database_url and redis_url:
        chosen.append("external")
    if docker_available():
        chosen.append("testcontainers")
    return [(name, every[name]) for name in chosen]


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
    print(f"  empty {medians['empty'] * 1000:.1f} ms")
    for path in ("template", "floor", "rollback"):
        print(f"  {path} {medians[path] * 1000:.1f} ms = " + " + ".join(
            f"{part} {seconds * 1000:.1f}" for part, seconds in parts[path].items()))
    print(f"  post-and-read: template {medians['post-and-read template'] * 1000:.1f} ms, "
          f"rollback {medians['post-and-read rollback'] * 1000:.1f} ms")
    print(f"  floor, the template path on the core alone (no plugins, no middleware): "
          f"{medians['floor'] / pair:.2f}x the pair")
    for path in ("empty", "template", "rollback"):
        print(f"P1 {name} {path}: {medians[path] / pair:.2f}x")
    print(f"P1 {name} template/empty: {medians['template'] / medians['empty']:.2f}x")
    ratio = medians["post-and-read rollback"] / medians["post-and-read template"]
    print(f"P1 {name} post-and-read rollback/template: {ratio:.2f}x")


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
