"""The startup runner: policies, the step unit, the checked plan and `run_plan`.

A step is a function whose parameters name the resources it needs; it returns what it
provides. A `Plan` checks, when it is built, that each need is given or provided by an earlier
step and that no resource is provided twice. `run_plan` runs the steps in order, each under its
policy, hands each step its inputs, keeps what it returns, publishes it on `app.state`, and on
the way out tears down, in reverse, the steps that started something, also after a failure.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import functools
import inspect
import time
import types
import typing
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fastapi import FastAPI

from pixsim7.backend.main.shared import app_context
from pixsim7.backend.main.startup.resources import RESOURCES
from pixsim7.backend.main.startup.timeline import StartupTimeline, StepRecord, startup_timeline

T = TypeVar("T")


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


class PlanError(ValueError):
    """A plan or step declaration is inconsistent; names the steps and the resource."""


class MissingInput(RuntimeError):
    """A step's need was not provided at run time: its provider failed under its policy."""


@dataclass
class StepOutcome:
    """What a step reports: its status and a few counts for the milestone."""

    status: str = "ok"
    counts: dict[str, Any] = field(default_factory=dict)


def _names(value: str | Sequence[str]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


def _parameters(function: Callable[..., Any]) -> list[inspect.Parameter]:
    """The parameters that name resources: keyword-only ones are options, not resources."""
    return [p for p in inspect.signature(function).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def _matches(hint: Any, expected: Any) -> bool:
    if hint == expected:
        return True
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        rest = tuple(arg for arg in typing.get_args(hint) if arg is not type(None))
        return len(rest) == 1 and _matches(rest[0], expected)
    return typing.get_origin(hint) is expected


def _check_annotations(name: str, function: Callable[..., Any]) -> None:
    """A parameter named like a known resource must be annotated with its type."""
    try:
        hints = typing.get_type_hints(getattr(function, "func", function))  # a partial's too
    except Exception:  # annotations that cannot be resolved here are not checked
        return
    for parameter in _parameters(function):
        resource = RESOURCES.get(parameter.name)
        hint = hints.get(parameter.name)
        if (resource is not None and resource.checkable and hint is not None
                and not _matches(hint, resource.type)):
            raise PlanError(f"step {name!r}: parameter {parameter.name!r} is annotated {hint}, "
                            f"but the resource {parameter.name!r} is a {resource.type}")


def _call(function: Callable[..., T], available: dict[str, Any]) -> T:
    """Call `function` with the values its parameters name (a parameter with a default may be
    absent)."""
    return function(**{p.name: available[p.name] for p in _parameters(function)
                       if p.name in available or p.default is inspect.Parameter.empty})


@dataclass(frozen=True)
class Step:
    """One step: its name, policy, setup (`run`), teardown and how its outcome reads (`report`).

    `run`'s parameters are what the step needs (one with a default None is needed only if its
    provider succeeded); it returns what it `provides` and `updates`, in that order (one value,
    or a tuple for several). `teardown` and `report` take any of those by name, and `report`
    also `result`, what `run` returned. Calling a step runs its setup alone.
    """

    name: str
    run: Callable[..., Awaitable[Any]]
    policy: Policy
    teardown: Callable[..., Awaitable[None]] | None = None
    report: Callable[..., StepOutcome] | None = None
    provides: tuple[str, ...] = ()
    updates: tuple[str, ...] = ()  # given or earlier resources this step replaces for later ones
    needs: tuple[str, ...] = field(init=False)
    optional_needs: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        parameters = _parameters(self.run)
        object.__setattr__(self, "needs", tuple(
            p.name for p in parameters if p.default is inspect.Parameter.empty))
        object.__setattr__(self, "optional_needs", tuple(
            p.name for p in parameters if p.default is None))
        _check_annotations(self.name, self.run)
        for key in self.updates:
            if key not in self.needs:
                raise PlanError(f"step {self.name!r} updates {key!r}, so its setup must take "
                                f"{key!r} as a parameter")
        known = {*self.needs, *self.optional_needs, *self.outputs, "result"}
        for role, function in (("teardown", self.teardown), ("report", self.report)):
            unknown = [p.name for p in _parameters(function) if p.name not in known
                       and p.default is inspect.Parameter.empty] if function is not None else []
            if unknown:
                raise PlanError(f"step {self.name!r}: its {role} takes {', '.join(unknown)}, "
                                f"which the step neither needs nor provides")

    @property
    def outputs(self) -> tuple[str, ...]:
        return self.provides + self.updates

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return await self.run(*args, **kwargs)

    def with_policy(self, policy: Policy) -> Step:
        """The same step under another policy (a plan where it matters more or less)."""
        return dataclasses.replace(self, policy=policy)

    def with_options(self, **options: Any) -> Step:
        """The same step with keyword-only options of its setup set (not resources)."""
        return dataclasses.replace(self, run=functools.partial(self.run, **options))

    @property
    def options(self) -> dict[str, Any]:
        """The keyword-only options its setup was given (`with_options`)."""
        return dict(self.run.keywords) if isinstance(self.run, functools.partial) else {}

    def output_values(self, result: Any) -> dict[str, Any]:
        """What `run` returned, by resource name, each checked against its declared type."""
        outputs = self.outputs
        if not outputs:
            return {}
        values = (result,) if len(outputs) == 1 else result
        if not isinstance(values, tuple) or len(values) != len(outputs):
            raise TypeError(f"step {self.name!r} must return {', '.join(outputs)} "
                            f"({len(outputs)} values); it returned {result!r}")
        found = dict(zip(outputs, values, strict=True))
        for key, value in found.items():
            resource = RESOURCES.get(key)
            if resource is not None and resource.checkable and not isinstance(
                    value, resource.type):
                raise TypeError(f"step {self.name!r} provided {key!r} as a "
                                f"{type(value).__name__}; it must be a {resource.type}")
        return found

    def outcome(self, result: Any, available: dict[str, Any]) -> StepOutcome:
        if isinstance(result, StepOutcome):
            return result
        if self.report is None:
            return StepOutcome()
        return _call(self.report, {**available, "result": result})


def step(name: str, policy: Policy, *, provides: str | Sequence[str] = (),
         updates: str | Sequence[str] = (), teardown: Callable[..., Awaitable[None]] | None = None,
         report: Callable[..., StepOutcome] | None = None) -> Callable[[Callable], Step]:
    """Decorate a setup function into a `Step`: its parameters are its needs."""
    return lambda run: Step(name, run, policy, teardown, report, _names(provides),
                            _names(updates))


@dataclass(frozen=True)
class Plan(Sequence[Step]):
    """Steps in order, checked when built: every need is given or provided earlier, nothing is
    provided twice. `given` are the resources the runner starts with (`app` and the keys of
    `app.state` that building the app wrote)."""

    steps: tuple[Step, ...]
    given: tuple[str, ...] = ("app", "settings")

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(self.steps))
        providers: dict[str, str] = {key: "given" for key in self.given}
        later = {key: each.name for each in reversed(self.steps) for key in each.provides}
        updated: dict[str, str] = {}
        names: set[str] = set()
        for each in self.steps:
            if each.name in names:
                raise PlanError(f"step {each.name!r} appears twice in the plan")
            names.add(each.name)
            for need in (*each.needs, *each.optional_needs):
                if need in providers:
                    continue
                if need in later and later[need] != each.name:
                    raise PlanError(
                        f"step {each.name!r} needs {need!r}, which step {later[need]!r} "
                        f"provides later; place {each.name!r} after {later[need]!r}")
                given = ", ".join(self.given) or "nothing"
                raise PlanError(f"step {each.name!r} needs {need!r}, which no step of the plan "
                                f"provides (given: {given})")
            for key in each.provides:
                if key in providers:
                    first = ("it is given to the plan" if providers[key] == "given"
                             else f"by step {providers[key]!r}")
                    raise PlanError(f"{key!r} is provided twice: {first} and by step "
                                    f"{each.name!r}")
                providers[key] = each.name
            for key in each.updates:
                if key in updated:
                    raise PlanError(f"{key!r} is provided twice: updated by step "
                                    f"{updated[key]!r} and by step {each.name!r}")
                updated[key] = each.name

    def __getitem__(self, index: Any) -> Any:
        return self.steps[index]

    def __len__(self) -> int:
        return len(self.steps)

    def step(self, name: str) -> Step:
        """The step named `name`."""
        for each in self.steps:
            if each.name == name:
                return each
        raise KeyError(f"no step {name!r} in the plan")

    def graph(self) -> list[dict[str, Any]]:
        """Each step with its policy, needs and provides, in order (what `check --graph`
        prints and a snapshot pins)."""
        return [{"step": each.name, "policy": each.policy.value,
                 "needs": [*each.needs, *(f"{n}?" for n in each.optional_needs)],
                 "provides": [*each.provides, *(f"{k} (updated)" for k in each.updates)]}
                for each in self.steps]


def begin_shutdown(app: FastAPI) -> None:
    """Mark `app` as stopping, so readiness turns 503 before the teardowns run."""
    app.state.lifecycle = "stopping"


def _record(timeline: StartupTimeline, phase: str, name: str, policy: Policy, started: float,
            status: str, counts: dict[str, Any] | None = None,
            exc: BaseException | None = None) -> None:
    error = None if exc is None else f"{type(exc).__name__}: {exc}"
    timeline.add(StepRecord(phase, name, policy, status, (time.perf_counter() - started) * 1000,
                            counts or {}, error, started))


def run_build_step(app: FastAPI, name: str, build: Callable[[], T],
                   report: Callable[[T], StepOutcome]) -> T:
    """Run a part of building `app` (phase "build"); a failure raises StartupAborted."""
    timeline, started = startup_timeline(app), time.perf_counter()
    try:
        built = build()
        outcome = report(built)
    except Exception as exc:
        _record(timeline, "build", name, Policy.REQUIRED, started, "failed", exc=exc)
        raise StartupAborted(name, exc, timeline) from exc
    _record(timeline, "build", name, Policy.REQUIRED, started, outcome.status, outcome.counts)
    return built


@dataclass
class _Started:
    step: Step
    values: dict[str, Any]  # its inputs and what it provided, for its teardown


class _Run:
    """One run of a plan: the resources so far and the steps that started something."""

    def __init__(self, app: FastAPI, plan: Plan, timeline: StartupTimeline) -> None:
        self.app, self.timeline = app, timeline
        missing = [key for key in plan.given if key != "app" and not hasattr(app.state, key)]
        if missing:
            raise PlanError(f"the plan is given {', '.join(missing)} from app.state, which "
                            "building the app did not set; build the app with create_app()")
        self.resources: dict[str, Any] = {
            key: app if key == "app" else getattr(app.state, key) for key in plan.given}
        self.providers: dict[str, str] = {}
        self.started: list[_Started] = []

    def inputs(self, each: Step) -> dict[str, Any]:
        for need in each.needs:
            if need not in self.resources:
                raise MissingInput(f"step {each.name!r} needs {need!r}, which step "
                                   f"{self.providers.get(need, '?')!r} did not provide (it failed)")
        return {name: self.resources.get(name) for name in (*each.needs, *each.optional_needs)}

    async def start(self, each: Step) -> None:
        """Run one step under its policy; keep and publish what it provides."""
        started, outputs = time.perf_counter(), None
        try:
            inputs = self.inputs(each)
            result = await each.run(**inputs)
            outputs = each.output_values(result)
            outcome = each.outcome(result, {**inputs, **outputs})
            if outcome.status == "degraded" and each.policy == Policy.REQUIRED:
                counts = ", ".join(f"{k}={v}" for k, v in outcome.counts.items())
                raise StepDegraded(f"{each.name} is required but came up degraded ({counts})")
        except Exception as exc:
            if outputs is not None and each.teardown is not None:  # it started, then was refused
                with contextlib.suppress(Exception):
                    await _call(each.teardown, {**inputs, **outputs})
            status = "degraded" if each.policy == Policy.DEGRADING else "failed"
            _record(self.timeline, "startup", each.name, each.policy, started, status, exc=exc)
            for key in each.provides:
                self.providers[key] = each.name
            if each.policy in (Policy.REQUIRED, Policy.PER_PLUGIN):
                raise StartupAborted(each.name, exc, self.timeline) from exc
            return
        self.resources.update(outputs)
        for key, value in outputs.items():
            setattr(self.app.state, key, value)
        _record(self.timeline, "startup", each.name, each.policy, started, outcome.status,
                outcome.counts)
        if each.teardown is not None and outcome.status != "skipped":
            self.started.append(_Started(each, {**inputs, **outputs}))

    async def teardown(self) -> None:
        for done in reversed(self.started):
            assert done.step.teardown is not None
            began = time.perf_counter()
            try:
                await _call(done.step.teardown, done.values)
            except Exception as exc:  # one failing teardown must not stop the others
                _record(self.timeline, "shutdown", done.step.name, done.step.policy, began,
                        "failed", exc=exc)
            else:
                _record(self.timeline, "shutdown", done.step.name, done.step.policy, began, "ok")


@asynccontextmanager
async def run_plan(app: FastAPI, plan: Plan | Sequence[Step],
                   profile: str = "api") -> AsyncIterator[StartupTimeline]:
    """Run `plan` on `app`; yield once started; tear down what started on the way out."""
    plan = plan if isinstance(plan, Plan) else Plan(tuple(plan))
    timeline, began = startup_timeline(app), time.perf_counter()
    timeline.profile = profile
    run = _Run(app, plan, timeline)
    app.state.lifecycle = "starting"
    app_context.activate(app)
    try:
        for each in plan:
            await run.start(each)
        # An optional step that failed (seeding) shows in /health, not in readiness.
        degraded = any(r.status == "degraded" for r in timeline.records if r.phase == "startup")
        _record(timeline, "startup", "complete", Policy.REQUIRED, began,  # the whole startup
                "degraded" if degraded else "ok")
        app.state.lifecycle = "ready"
        yield timeline
    finally:
        begin_shutdown(app)
        try:
            await run.teardown()
        finally:
            app.state.lifecycle = "stopped"
            app_context.deactivate(app)
