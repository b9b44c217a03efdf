"""The pixsim7 testing kit as a pytest plugin, loaded through the `pytest11` entry point
`pixsim7` of the `pixsim7-testing` distribution: installing it is enough.

Fixtures: `kit_services` (session: PostgreSQL and Redis from the chosen backend),
`test_database` and `redis_namespace` (per test, removed after; a test marked `template_db`
gets a clone of the run's migrated and seeded template, `kit_template`), `kit_tier` and
`kit_shared_apps` (a test marked `rollback_db` shares its worker's started app for its
settings, inside a transaction rolled back after it; see `pixsim7_testing.rollback`),
`make_settings` / `app_settings` (backend Settings aimed at them), `fault_proxy` (cut /
blackhole / restore a service), `app_factory` (build an app, run its lifespan, give a client,
milestones and app.state inventory), `kit_normalizer` and `snapshot_json` (syrupy JSON
snapshots), `backend_env` / `backend_services_env` (a subprocess environment without the
parent's backend settings, the second aimed at this test's database and Redis),
`backend_processes` (start the real CLI, stopped after the test) and `servers_data_dir` (a
PIXSIM7_DATA_DIR for embedded servers, removed after the test).
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import Any

import pytest
from pixsim7_testing.apps import DEFAULT_FACTORY
from pixsim7_testing.fixtures.apps import STARTED_APPS, write_app_traces
from pixsim7_testing.markers import (
    KIT_LOOP_SCOPE,
    PROCESS_MARKER,
    RUN_SERVICES,
    TEMPLATE_MARKER,
    services_did_not_start,
)
from pixsim7_testing.ownership import reap_leftovers
from pixsim7_testing.pool import pool_size
from pixsim7_testing.rollback import MARKER as ROLLBACK_MARKER
from pixsim7_testing.services import ServiceStartError, describe_selection, select_backend
from pixsim7_testing.session import WORKERINPUT_KEY, RunServices

# The fixtures, by what they provide; registered with this plugin.
pytest_plugins = [
    "pixsim7_testing.fixtures.services",
    "pixsim7_testing.fixtures.apps",
    "pixsim7_testing.fixtures.processes",
    "pixsim7_testing.fixtures.faults",
]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "pixsim7_app_factory",
        "module:callable that builds the app from a Settings object",
        default=DEFAULT_FACTORY,
    )
    parser.addoption(
        "--startup-trace", metavar="DIR", default=None,
        help="write the startup and shutdown of every app a test starts to DIR as Chrome "
             "Trace Event JSON (open them in ui.perfetto.dev); a failed test's are written "
             "to its tmp_path without this option")

def pytest_report_header(config: pytest.Config) -> list[str]:
    try:
        return [f"pixsim7 services: {describe_selection(select_backend())}"]
    except ServiceStartError as exc:
        return [f"pixsim7 services: {exc}"]

def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{TEMPLATE_MARKER}: test_database is a clone of the run's migrated and seeded template "
        "instead of an empty database (for tests that do not pin schema creation)",
    )
    config.addinivalue_line(
        "markers",
        f"{ROLLBACK_MARKER}: app_factory gives a started app shared by this worker's tests "
        "with the same settings; the test runs in a transaction rolled back after it",
    )
    config.addinivalue_line(
        "markers",
        f"{PROCESS_MARKER}: set by the kit on every test that runs the backend's own commands "
        f"(it uses backend_env): `-m 'not {PROCESS_MARKER}'` keeps the tests that run in the "
        "test process",
    )
    try:
        pool_size()  # a bad PIXSIM7_TEST_DATABASE_POOL is one sentence, before any test
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
    workerinput = getattr(config, "workerinput", None)
    config.stash[RUN_SERVICES] = (RunServices.from_workerinput(workerinput[WORKERINPUT_KEY])
                                  if workerinput and WORKERINPUT_KEY in workerinput
                                  else RunServices())

@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    report = yield
    if report.when == "call" and report.failed and item.stash.get(STARTED_APPS, []):
        folder = item.config.getoption("startup_trace")
        tmp_path = getattr(item, "funcargs", {}).get("tmp_path")
        if folder is None and tmp_path is not None:
            folder = tmp_path
        if folder is not None:
            paths = write_app_traces(item, Path(folder))
            report.sections.append(("pixsim7 startup trace", "\n".join(
                f"{path} (open it in ui.perfetto.dev, online)" if path.suffix == ".json"
                else f"{path} (open it in any browser, offline)" for path in paths)))
    return report

@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_pycollect_makeitem(collector: Any, name: str, obj: object) -> Any:
    # Before pytest-asyncio sees it: an `async def` test without an `asyncio` mark of its own
    # runs on the kit's loop, in pytest-asyncio's strict mode as in auto, so that a project
    # needs no asyncio settings for the kit (a test's own mark still wins).
    if inspect.iscoroutinefunction(obj) and collector.get_closest_marker("asyncio") is None \
            and not any(mark.name == "asyncio" for mark in getattr(obj, "pytestmark", ())):
        pytest.mark.asyncio(loop_scope=KIT_LOOP_SCOPE)(obj)
    yield

@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "backend_env" in getattr(item, "fixturenames", ()):
            item.add_marker(PROCESS_MARKER)
    # Without xdist the services start here, when a collected test needs them, so that a run
    # they cannot serve stops before any test (xdist's controller starts them for its workers).
    services = config.stash[RUN_SERVICES]
    if services.owner and any("kit_services" in getattr(item, "fixturenames", ())
                              for item in items):
        try:
            services.get()
        except ServiceStartError as exc:
            services_did_not_start(str(exc))

@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    # Before xdist starts workers (and so the services): only the owning process cleans up.
    if not hasattr(session.config, "workerinput"):
        line = reap_leftovers()
        if line:
            reporter = session.config.pluginmanager.get_plugin("terminalreporter")
            if reporter is not None:
                reporter.write_line(line)
            else:
                print(line, file=sys.stderr)

@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist controller: start the run's services once and hand them to each worker."""
    services = node.config.stash[RUN_SERVICES]
    node.workerinput[WORKERINPUT_KEY] = services.workerinput()
    if services.error is not None:
        services_did_not_start(services.error)

@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    session.config.stash[RUN_SERVICES].stop()

def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    line = config.stash[RUN_SERVICES].summary()
    if line:
        terminalreporter.write_line(line)
