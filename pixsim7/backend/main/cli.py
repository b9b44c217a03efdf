"""The `pixsim7-backend` command line: `serve`, `worker` and `check`."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Sequence

from arq.worker import Worker
from fastapi import FastAPI
from pydantic import ValidationError

from pixsim7.backend.main.infrastructure.adapters.redis import REDIS_DOWN, safe_redis_url
from pixsim7.backend.main.infrastructure.registries import jobs
from pixsim7.backend.main.main import create_app
from pixsim7.backend.main.shared.config import Settings, get_settings
from pixsim7.backend.main.shared.logs import configure_logging
from pixsim7.backend.main.startup import (
    PROFILES,
    Policy,
    SettingsError,
    StartupAborted,
    StartupTimeline,
    StepRecord,
    TraceFileError,
    check_trace_path,
    run_plan,
    setup_embedded_services,
    write_trace,
)
from pixsim7.backend.main.startup.page import app_page, plan_view, write_page
from pixsim7.backend.main.startup.trace import write_text
from pixsim7.backend.main.state import state_of
from pixsim7.backend.main.worker import (
    WorkerConfigError,
    declared_job_kinds,
    unregistered_job_kinds,
    worker_settings,
)

logger = logging.getLogger("pixsim7.worker")
SERVE_STARTUP_FAILED = 3  # uvicorn's exit code when the app does not start


# Settings whose values are never echoed back, not even when they are malformed.
_SECRET_SETTINGS = frozenset(
    {"secret_key", "admin_token", "events_token", "jobs_token", "database_url", "redis_url"})


def _settings_problems(exc: Exception) -> str:
    """Each bad setting, named by its environment variable (DEBUG, not debug), with the value
    as it was given (never a secret's)."""
    if not isinstance(exc, ValidationError):
        return str(exc)
    problems = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else ""
        env = "PIXSIM7_DATA_DIR" if field == "data_dir" else (field.upper() or "settings")
        given = os.environ.get(env, error.get("input"))  # before validators changed its case
        shown = field and field not in _SECRET_SETTINGS and "input" in error
        problems.append(f"{env}: {error['msg']}" + (f" (got {given!r})" if shown else ""))
    return "; ".join(problems)


class InvalidSettings(ValueError):
    """The settings cannot be read; the message names each variable at fault."""


class PortUnavailable(OSError):
    """`serve` cannot listen where it was asked to; the message says where and why."""


def _load_settings() -> Settings:
    try:
        return get_settings()
    except Exception as exc:
        raise InvalidSettings(_settings_problems(exc)) from None


def _listening_socket(host: str, port: int) -> socket.socket:
    """The socket `serve` listens on, bound before anything starts: a port in use is found
    here, not after a whole startup and teardown."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise PortUnavailable(f"cannot listen on {host}:{port}: "
                              f"{(exc.strerror or str(exc)).lower()}") from None
    return sock


def serve(host: str, port: int) -> int:
    """Run the API under uvicorn; SIGTERM turns /ready 503, drains, then runs the teardowns."""
    # Imported here: uvicorn and its protocols are for `serve` only, not every command's start.
    from pixsim7.backend.main.serving import DrainingServer, StartupReporter, server_config

    try:
        sock = _listening_socket(host, port)
    except PortUnavailable as exc:
        return report_refusal("listen", exc, SERVE_STARTUP_FAILED)
    try:
        app = create_app(_load_settings())
    except StartupAborted as exc:
        sock.close()
        return report_startup_failure(exc, SERVE_STARTUP_FAILED)
    reporter = StartupReporter(app)
    server = DrainingServer(server_config(app, host, port, asgi=reporter), app)
    # uvicorn re-raises the signal it stopped on once shutdown is done; a SIGTERM or a Ctrl-C
    # (SIGINT) that led to a clean shutdown is a normal end of service: the process exits 0,
    # quietly. A second Ctrl-C while it stops makes uvicorn stop at once.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: sys.exit(0 if server.started else SERVE_STARTUP_FAILED))
    try:
        server.run(sockets=[sock])
    except SystemExit:  # uvicorn's own exit when the startup failed (or the port is taken)
        if reporter.failure is None:
            raise
    finally:
        _write_trace_file(app)
    if reporter.failure is not None:
        return report_startup_failure(reporter.failure, SERVE_STARTUP_FAILED)
    return 0 if server.started else SERVE_STARTUP_FAILED


def _write_trace_file(app: FastAPI) -> None:
    # Checked at startup (the settings step); should the folder go away meanwhile, the trace is
    # lost with one sentence, not a traceback, and the exit code stays the run's.
    settings, state = app.state.settings, state_of(app)
    for what, path, write in (
            ("trace", settings.startup_trace_file, lambda p: write_trace(state.startup, p)),
            ("page", settings.startup_page_file, lambda p: write_text(app_page(app), p))):
        if path is None:
            continue
        try:
            write(path)
        except (TraceFileError, OSError) as exc:
            logging.getLogger("pixsim7.startup").error(
                "the startup %s was not written to %s: %s", what, path, exc)


def worker() -> int:
    """Run the arq worker until SIGTERM or SIGINT; running jobs get SHUTDOWN_DRAIN_SECONDS."""
    settings = _load_settings()
    # Before arq, which connects to Redis first: in debug, the data folder's embedded servers
    # (those `serve` runs, or started here), so the worker plan finds its URLs set. Outside
    # debug nothing starts here, and worker_settings refuses settings the worker cannot run on.
    # The worker plan's own step then has nothing to do; these milestones say what happened.
    timeline, began = StartupTimeline(), time.perf_counter()
    try:
        embedded, settings = asyncio.run(setup_embedded_services(settings))
    except Exception as exc:
        return report_refusal(setup_embedded_services.name, exc)
    _milestone(timeline, "startup", began, {"started": sorted(embedded.started),
                                            "shared": sorted(set(embedded.urls)
                                                             - set(embedded.started))})
    try:
        return _run_worker(settings)
    finally:
        began = time.perf_counter()
        stopped = embedded.release()  # no event loop here: arq's stays as it left it
        _milestone(timeline, "shutdown", began, {"stopped": stopped})


def _milestone(timeline: StartupTimeline, phase: str, began: float,
               counts: dict[str, list[str]]) -> None:
    if any(counts.values()):
        timeline.add(StepRecord(phase, setup_embedded_services.name, str(Policy.REQUIRED), "ok",
                                (time.perf_counter() - began) * 1000, counts))


def _run_worker(settings: Settings) -> int:
    try:
        options = worker_settings(settings, owns_process=True)
    except (SettingsError, WorkerConfigError) as exc:
        return report_refusal("settings", exc)
    asyncio.set_event_loop(new_event_loop())
    arq_worker = Worker(**options)
    try:
        arq_worker.run()
    except StartupAborted as exc:
        return report_startup_failure(exc)
    except REDIS_DOWN as exc:  # arq connects before the plan runs: Redis is required
        print(f"startup failed at step 'redis': {type(exc).__name__}: Redis at "
              f"{safe_redis_url(settings.redis_url or '')} is unavailable", file=sys.stderr)
        return 1
    logger.info("worker stopped after %d jobs (%d complete, %d failed)",
                arq_worker.jobs_complete + arq_worker.jobs_failed, arq_worker.jobs_complete,
                arq_worker.jobs_failed)
    return 0


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop where it is installed (everywhere but Windows), as `serve` gets
    from uvicorn: a worker takes trivial jobs about 10% faster on it than on asyncio's, and
    `check` runs a startup as `serve` does (an error's text can differ between the loops)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def format_timeline(timeline: StartupTimeline) -> str:
    rows = [("phase", "step", "policy", "status", "ms", "detail")]
    for record in timeline.records:
        detail = record.error or ", ".join(f"{k}={v}" for k, v in record.counts.items())
        rows.append((record.phase, record.step, str(record.policy), record.status,
                     f"{record.duration_ms:.0f}", detail))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    return "\n".join(
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:5])) + "  " + row[5]
        for row in rows
    )


def report_refusal(step: str, cause: BaseException, code: int = 1) -> int:
    """The one sentence a failed startup ends with, on stderr; return `code`."""
    print(f"startup failed at step '{step}': {type(cause).__name__}: {cause}", file=sys.stderr)
    return code


def report_startup_failure(exc: StartupAborted, code: int = 1) -> int:
    """Print the steps that ran and the one that failed, without a traceback; return `code`."""
    if exc.timeline is not None:
        print(format_timeline(exc.timeline) + "\n")
    return report_refusal(exc.step, exc.cause, code)


def check(name: str, trace: str | None = None, graph: bool = False, html: str | None = None,
          graph_format: str = "text") -> int:
    """Run startup once and shut down; print each step; non-zero when a required step fails.
    With `trace`, also write the startup and shutdown there as Chrome Trace Event JSON; with
    `html`, as a self-contained page (also when startup fails); with `graph`, print the plan's
    steps with their needs and provides (`graph_format`: text, mermaid or json) and start
    nothing."""
    profile = PROFILES[name]
    for option, path in (("--trace", trace), ("--html", html)):
        if path:
            try:
                check_trace_path(path)
            except TraceFileError as exc:
                print(f"check {option}: {exc}", file=sys.stderr)
                return 2
    if graph:
        print(plan_view(profile.name, profile.plan, graph_format), end="")
        return 0

    async def main() -> tuple[StartupTimeline, list[str], list[dict]]:
        settings = _load_settings()
        app = create_app(settings, profile=profile.name)
        alive: list[dict] = []
        async with run_plan(app, profile.plan, profile.name) as timeline:
            kinds = [f"{kind.name} ({kind.owner})" for kind in app.state.job_registry.kinds()]
            if profile.runs_jobs:
                kinds += [f"{kind} (declared, not registered: its plugin failed)"
                          for kind in unregistered_job_kinds(declared_job_kinds(settings),
                                                             app.state.job_registry)]
                alive = await jobs.workers(app.state.redis.client, settings.redis_key_prefix)
        return timeline, kinds, alive

    try:
        # On the event loop `serve` and `worker` run on, so that a failure reads the same.
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            timeline, kinds, alive = runner.run(main())
    except StartupAborted as exc:
        if trace and exc.timeline is not None:
            write_trace(exc.timeline, trace)
        if html and exc.timeline is not None:
            write_page(exc.timeline, profile.plan, html, "stopped")
        return report_startup_failure(exc)
    if trace:
        write_trace(timeline, trace)
    if html:
        write_page(timeline, profile.plan, html, "stopped")
    print(format_timeline(timeline))
    print(f"\njob kinds: {', '.join(kinds)}")
    if profile.runs_jobs:
        print(f"workers alive: {len(alive)}")
        for record in alive:
            print("  " + "  ".join(f"{key}={value}" for key, value in record.items()))
    return 0


DESCRIPTION = """\
The pixsim7 backend: serve the HTTP API, run a background worker, or check a startup.

Settings are read from the environment (and a .env file in the working folder); see
GETTING_STARTED.md for each. With DEBUG=true (the default), an unset DATABASE_URL or REDIS_URL
means an embedded PostgreSQL or Redis kept in PIXSIM7_DATA_DIR (default ./.pixsim7), shared by
every command that uses the same folder: `serve` in one terminal and `worker` in another work
together as they are."""

SERVE_SETTINGS = """\
settings it reads:
  DATABASE_URL          PostgreSQL; required when DEBUG=false (else embedded)
  REDIS_URL             Redis for background jobs; without it (DEBUG=false) jobs are off
  SECRET_KEY            required, not the default, when DEBUG=false
  ADMIN_TOKEN           the admin API's bearer token (DEBUG=false without it: admin API off)
  SHUTDOWN_DRAIN_SECONDS, STARTUP_TRACE_FILE, LOG_LEVEL, LOG_FORMAT, and the limits in
  GETTING_STARTED.md"""

WORKER_SETTINGS = """\
settings it reads:
  REDIS_URL             where jobs are queued; required when DEBUG=false (else embedded,
                        the same Redis a `serve` on this PIXSIM7_DATA_DIR uses)
  REDIS_KEY_PREFIX      must match the API's, so both use one queue
  DATABASE_URL          PostgreSQL; required when DEBUG=false (else embedded)
  JOB_TIMEOUT_SECONDS, JOB_MAX_TRIES, JOB_RETRY_BACKOFF_SECONDS, SHUTDOWN_DRAIN_SECONDS"""

CHECK_SETTINGS = """\
settings it reads: those of the profile's command (`serve` for api, `worker` for worker);
exits 1 where that command would refuse to start, with the same sentence."""

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter,
                     argparse.RawDescriptionHelpFormatter):
    """Defaults shown after each option; descriptions and settings lists kept as written."""


def _parser() -> argparse.ArgumentParser:
    # --log-level is accepted before the command and after it; given after, it wins.
    def log_level(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--log-level", type=str.upper, choices=LOG_LEVELS,
                            default=argparse.SUPPRESS, metavar="LEVEL",
                            help="this run's log level, overriding LOG_LEVEL (one of "
                                 f"{', '.join(LOG_LEVELS)}; default: LOG_LEVEL, itself INFO)")

    parser = argparse.ArgumentParser(prog="pixsim7-backend", description=DESCRIPTION,
                                     formatter_class=_HelpFormatter)
    log_level(parser)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, summary: str, settings: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=summary, description=summary, epilog=settings,
                                  formatter_class=_HelpFormatter)
        log_level(sub)
        return sub

    serve_cmd = command("serve", "Serve the HTTP API (uvicorn) until SIGTERM or SIGINT; on "
                        "SIGTERM /ready turns 503, requests drain, then it stops.", SERVE_SETTINGS)
    serve_cmd.add_argument("--host", default="127.0.0.1", help="the address to listen on")
    serve_cmd.add_argument("--port", type=int, default=8000, help="the port to listen on")
    command("worker", "Run a background worker (arq) that takes the jobs queued through POST "
            "/api/v1/jobs, until SIGTERM or SIGINT.", WORKER_SETTINGS)
    check_cmd = command("check", "Run a profile's startup once, print each step with its "
                        "policy, status and time, and shut down; exit 1 when it fails.",
                        CHECK_SETTINGS)
    check_cmd.add_argument("--profile", choices=sorted(PROFILES), default="api",
                           help="api: what `serve` starts; worker: what `worker` starts")
    check_cmd.add_argument("--graph", action="store_true",
                           help="print the plan's steps with what each needs and provides, "
                                "checked, and start nothing")
    check_cmd.add_argument("--format", dest="graph_format", default="text",
                           choices=("text", "mermaid", "json"),
                           help="with --graph: a text table (the default), a Mermaid flowchart "
                                "(GitHub and GitLab draw it in Markdown) or JSON")
    check_cmd.add_argument("--trace", metavar="FILE", default=None,
                           help="also write the startup and shutdown to FILE as Chrome Trace "
                                "Event JSON (ui.perfetto.dev opens it; it needs the internet)")
    check_cmd.add_argument("--html", metavar="FILE", default=None,
                           help="also write the startup and shutdown, and the plan, to FILE as "
                                "one self-contained HTML page (opens offline), also on failure")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # What importing built, most of the heap, lives as long as the process. Frozen, the
    # collector never scans it again, and the interpreter's last collection at exit skips it:
    # a stop took 0.2 s longer without this, all of it after the last log line.
    gc.freeze()
    args = _parser().parse_args(argv)
    try:
        settings = _load_settings()
    except InvalidSettings as exc:  # in the form of every startup failure
        return report_refusal("settings", exc,
                              SERVE_STARTUP_FAILED if args.command == "serve" else 1)
    level = getattr(args, "log_level", None) or settings.log_level
    configure_logging(level, settings.log_format, settings.secret_values())
    if args.command == "serve":
        return serve(args.host, args.port)
    if args.command == "worker":
        return worker()
    return check(args.profile, args.trace, args.graph, args.html, args.graph_format)


if __name__ == "__main__":
    raise SystemExit(main())
