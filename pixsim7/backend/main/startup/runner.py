"""The startup runner: policies, the step unit and `run_plan`.

A plan is a tuple of `Step`s. `run_plan` runs them in order, each under its policy, records each
outcome on the app's timeline, and on the way out tears down, in reverse, the steps that started
something, also after a failure.
"""

from __future__ import annotations

import dataclasses
import enum
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI

from pixsim7.backend.main.shared import app_context
from pixsim7.backend.main.startup.timeline import StartupTimeline, StepRecord, startup_timeline


class Policy(enum.StrEnum):
    """What a step's failure (it raises) means; see GETTING_STARTED.md, 'Startup failure policy'.

    PER_PLUGIN is REQUIRED for the runner: the plugins step itself raises for a required plugin
    or under PLUGIN_FAIL_FAST, and reports an optional plugin's failure as degraded.
    """

    REQUIRED = "required"  # recorded failed; startup aborts (also when it reports degraded)
    OPTIONAL = "optional"  # recorded failed; startup goes on and completes ok
    DEGRADING = "degrading"  # recorded degraded; startup goes on and completes degraded
    PER_PLUGIN = "per_plugin"  # aborts like REQUIRED; each plugin's manifest decides the raise


class StartupAborted(RuntimeError):
    """A required step failed; what had started has been torn down. Carries the timeline."""

    def __init__(self, step: str, cause: BaseException,
                 timeline: StartupTimeline | None = None) -> None:
        super().__init__(f"startup step '{step}' failed: {type(cause).__name__}: {cause}")
        self.step, self.cause, self.timeline = step, cause, timeline


class StepDegraded(RuntimeError):
    """A required step came up only partly (it reported degraded)."""


StepFunction = Callable[[FastAPI], Awaitable[Any]]


@dataclass
class StepOutcome:
    """What a step reports: its status and a few counts for the milestone."""

    status: str = "ok"
    counts: dict[str, Any] = field(default_factory=dict)


Report = Callable[[FastAPI, Any], StepOutcome]  # (app, what the setup returned) -> outcome


@dataclass(frozen=True)
class Step:
    """One step: its name, policy, setup (`run`), teardown and how its result reads (`report`).

    Calling a step runs its setup alone and returns what the setup returns.
    """

    name: str
    run: StepFunction
    policy: Policy
    teardown: StepFunction | None = None
    report: Report | None = None

    async def __call__(self, app: FastAPI) -> Any:
        return await self.run(app)

    def with_policy(self, policy: Policy) -> Step:
        """The same step under another policy (a plan where it matters more or less)."""
        return dataclasses.replace(self, policy=policy)

    async def outcome(self, app: FastAPI) -> StepOutcome:
        result = await self.run(app)
        if isinstance(result, StepOutcome):
            return result
        return self.report(app, result) if self.report is not None else StepOutcome()


def step(name: str, policy: Policy, *, teardown: StepFunction | None = None,
         report: Report | None = None) -> Callable[[StepFunction], Step]:
    """Decorate a setup function into a `Step` named `name`."""
    return lambda run: Step(name, run, policy, teardown, report)


def begin_shutdown(app: FastAPI) -> None:
    """Mark `app` as stopping, so readiness turns 503 before the teardowns run."""
    app.state.lifecycle = "stopping"


def _record(timeline: StartupTimeline, phase: str, name: str, policy: Policy, started: float,
            status: str, counts: dict[str, Any] | None = None,
            exc: BaseException | None = None) -> None:
    error = None if exc is None else f"{type(exc).__name__}: {exc}"
    timeline.add(StepRecord(phase, name, policy, status, (time.perf_counter() - started) * 1000,
                            counts or {}, error, started))


def run_build_step(app: FastAPI, name: str, build: Callable[[FastAPI], StepOutcome]) -> None:
    """Run a part of building `app` (phase "build"); a failure raises StartupAborted."""
    timeline, started = startup_timeline(app), time.perf_counter()
    try:
        outcome = build(app)
    except Exception as exc:
        _record(timeline, "build", name, Policy.REQUIRED, started, "failed", exc=exc)
        raise StartupAborted(name, exc, timeline) from exc
    _record(timeline, "build", name, Policy.REQUIRED, started, outcome.status, outcome.counts)


async def _start(app: FastAPI, step: Step, timeline: StartupTimeline) -> bool:
    """Run one step under its policy; True when it started something to tear down."""
    started = time.perf_counter()
    try:
        outcome = await step.outcome(app)
        if outcome.status == "degraded" and step.policy == Policy.REQUIRED:
            counts = ", ".join(f"{k}={v}" for k, v in outcome.counts.items())
            raise StepDegraded(f"{step.name} is required but came up degraded ({counts})")
    except Exception as exc:
        status = "degraded" if step.policy == Policy.DEGRADING else "failed"
        _record(timeline, "startup", step.name, step.policy, started, status, exc=exc)
        if step.policy in (Policy.REQUIRED, Policy.PER_PLUGIN):
            raise StartupAborted(step.name, exc, timeline) from exc
        return False
    _record(timeline, "startup", step.name, step.policy, started, outcome.status, outcome.counts)
    return step.teardown is not None and outcome.status != "skipped"


async def _teardown(app: FastAPI, started: list[Step], timeline: StartupTimeline) -> None:
    for done in reversed(started):
        assert done.teardown is not None
        began = time.perf_counter()
        try:
            await done.teardown(app)
        except Exception as exc:  # one failing teardown must not stop the others
            _record(timeline, "shutdown", done.name, done.policy, began, "failed", exc=exc)
        else:
            _record(timeline, "shutdown", done.name, done.policy, began, "ok")


@asynccontextmanager
async def run_plan(app: FastAPI, plan: tuple[Step, ...],
                   profile: str = "api") -> AsyncIterator[StartupTimeline]:
    """Run `plan` on `app`; yield once started; tear down what started on the way out."""
    timeline, began = startup_timeline(app), time.perf_counter()
    timeline.profile = profile
    app.state.lifecycle = "starting"
    started: list[Step] = []
    app_context.activate(app)
    try:
        for each in plan:
            if await _start(app, each, timeline):
                started.append(each)
        # An optional step that failed (seeding) shows in /health, not in readiness.
        degraded = any(r.status == "degraded" for r in timeline.records if r.phase == "startup")
        _record(timeline, "startup", "complete", Policy.REQUIRED, began,  # the whole startup
                "degraded" if degraded else "ok")
        app.state.lifecycle = "ready"
        yield timeline
    finally:
        begin_shutdown(app)
        try:
            await _teardown(app, started, timeline)
        finally:
            app.state.lifecycle = "stopped"
            app_context.deactivate(app)
