"""`GET /metrics` in Prometheus' text format, from a registry each app owns (`app.state.metrics`).

Labels carry route templates, methods, status codes, check, step and status names: never an
id, a URL or a secret. METRICS=admin puts the endpoint behind the admin token.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Scope

from pixsim7.backend.main.api import health
from pixsim7.backend.main.api.deps import AppSettings, State
from pixsim7.backend.main.api.observing import ResponseObserver

try:
    from fastapi.routing import iter_route_contexts
except ImportError:  # FastAPI versions that copy included routes, full paths, into the app
    iter_route_contexts = None
from pixsim7.backend.main.api.security import require_admin
from pixsim7.backend.main.state import state_of

router = APIRouter(tags=["health"])
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
READY_STATUSES = ("ready", "degraded", "unavailable")


class AppMetrics:
    """One app's Prometheus registry: request counts and latency, plus its state at scrape time."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.registry = CollectorRegistry()
        self.requests = Counter("pixsim7_http_requests", "HTTP requests answered",
                                ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram("pixsim7_http_request_duration_seconds",
                                 "HTTP request latency", ["route", "method"],
                                 registry=self.registry)
        self.registry.register(_StateCollector(app))
        # Looking a labelled child up takes a lock each time; each label set is looked up once.
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._templates: dict[int, str] = {}

    def template(self, route: Any) -> str:
        """The full path template of a matched route (`unmatched` for none)."""
        if route is None:
            return "unmatched"
        template = self._templates.get(id(route))
        if template is None:
            # An included router's routes know only their own part of the path; the app's
            # route contexts know the whole. Building them costs milliseconds per router, so
            # the walk stops at the route asked for (plugins add routes at startup: a later
            # miss walks again).
            routes = self.app.router.routes
            for context in iter_route_contexts(routes) if iter_route_contexts else routes:
                key = id(getattr(context, "original_route", context))
                self._templates[key] = (getattr(context, "path_format", None)
                                        or getattr(context, "path", None) or "unmatched")
                if key == id(route):
                    break
            template = self._templates.setdefault(
                id(route), getattr(route, "path_format", None) or "unmatched")
        return template

    def observe(self, scope: Scope, status: int, seconds: float) -> None:
        template = self.template(scope.get("route"))
        method = scope["method"] if scope["method"] in METHODS else "other"
        key = (template, method, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self.requests.labels(key[0], method, str(status)),
                self.latency.labels(key[0], method))
        children[0].inc()
        children[1].observe(seconds)

    def summary(self) -> dict[str, Any]:
        return {"families": sorted(m.name for m in self.registry.collect())}


class _StateCollector(Collector):
    """Readiness, checks, startup steps and plugins, read from the app when scraped."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        state = state_of(self.app)
        checker = state.readiness
        current = checker.status if checker is not None else None
        ready = GaugeMetricFamily("pixsim7_readiness_status",
                                  "1 for the current readiness status", labels=["status"])
        for name in READY_STATUSES:
            ready.add_metric([name], 1.0 if current == name else 0.0)
        yield ready
        checks = checker.checks if checker is not None else {}
        up = GaugeMetricFamily("pixsim7_check_up", "1 when the dependency check passed",
                               labels=["check"])
        took = GaugeMetricFamily("pixsim7_check_duration_seconds",
                                 "how long the last dependency check took", labels=["check"])
        for name, check in sorted(checks.items()):
            up.add_metric([name], 1.0 if check.status == "connected" else 0.0)
            took.add_metric([name], check.duration_ms / 1000)
        runs = CounterMetricFamily("pixsim7_check_runs", "dependency checks run (probes within "
                                   "READY_CACHE_TTL share one)", labels=["check"])
        for name, count in sorted(checker.runs.items() if checker is not None else ()):
            runs.add_metric([name], count)
        yield up
        yield took
        yield runs
        steps = GaugeMetricFamily("pixsim7_startup_step_duration_seconds",
                                  "duration of each startup and shutdown step, by its status",
                                  labels=["phase", "step", "status"])
        timeline = state.startup
        for record in {(r.phase, r.step): r for r in getattr(timeline, "records", [])}.values():
            steps.add_metric([record.phase, record.step, record.status],
                             record.duration_ms / 1000)
        yield steps
        plugins, _ = health.plugin_counts(self.app)
        yield GaugeMetricFamily("pixsim7_plugins_enabled", "enabled plugins",
                                value=plugins["enabled"])
        yield GaugeMetricFamily("pixsim7_plugins_failed", "plugins that failed to load",
                                value=len(plugins["failed"]))


class RequestMetricsMiddleware(ResponseObserver):
    """Counts each HTTP request by route template, method and status."""

    def __init__(self, app: ASGIApp, metrics: AppMetrics) -> None:
        super().__init__(app)
        self.metrics = metrics

    def observe(self, scope: Scope, status: int, seconds: float) -> None:
        # The router put the matched route into the scope on the way in.
        self.metrics.observe(scope, status, seconds)


@router.get("/metrics", summary="Prometheus metrics (METRICS=admin: admin token needed)",
            response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}},
                             "description": "Prometheus text exposition format"}})
async def metrics(request: Request, settings: AppSettings, state: State) -> Response:
    if settings.metrics == "admin":
        require_admin(request)
    await health.readiness(request.app)  # the readiness gauges follow the checks (briefly cached)
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
