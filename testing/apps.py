"""Running a real app's lifespan around a test, with a client and what it recorded."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import FastAPI
from pixsim7_testing.inventory import Normalizer, state_inventory
from pixsim7_testing.milestones import MilestoneRecorder

AppFactory = Callable[[Any], FastAPI]
DEFAULT_FACTORY = "pixsim7.backend.main.main:create_app"
DEFAULT_PROBES = ("/", "/ready", "/health")


def load_factory(spec: str) -> AppFactory:
    """`package.module:callable` to the callable."""
    module_name, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module_name), attr or "create_app")


@dataclass
class RunningApp:
    """An app whose startup has run (or failed); `stop()` runs its shutdown."""

    app: FastAPI
    settings: Any
    recorder: MilestoneRecorder
    normalizer: Normalizer
    startup_error: BaseException | None = None
    client: httpx.AsyncClient | None = None
    _lifespan: AbstractAsyncContextManager | None = field(default=None, repr=False)
    _owner: RunningApp | None = field(default=None, repr=False)  # set on a view()

    @property
    def started(self) -> bool:
        return self.startup_error is None

    @property
    def milestones(self) -> list[dict[str, Any]]:
        """Every milestone logged so far, startup and shutdown, in order."""
        return list(self.recorder.records)

    def normalized_milestones(self) -> list[dict[str, Any]]:
        return [self.normalizer(m) for m in self.recorder.records]

    def inventory(self) -> dict[str, Any]:
        return state_inventory(self.app.state, self.normalizer)

    async def get(self, path: str, **kwargs: Any) -> httpx.Response:
        if self.client is None:
            raise RuntimeError("the app did not start, so it has no client")
        return await self.client.get(path, **kwargs)

    async def probe(self, paths: Sequence[str] = DEFAULT_PROBES) -> dict[str, Any]:
        """Status code and normalized JSON body of each path."""
        result = {}
        for path in paths:
            response = await self.get(path)
            try:
                body: Any = response.json()
            except ValueError:
                body = response.text
            result[path] = {"status": response.status_code, "body": self.normalizer(body)}
        return result

    async def story(self, probe_paths: Sequence[str] | str | None = DEFAULT_PROBES, *,
                    inventory: bool = True) -> dict[str, Any]:
        """What a startup story pins, then shuts the app down.

        Started: the probes of `probe_paths` under "probes" (a single path given as a string:
        its probe under the path's name, "/ready" -> "ready"; None: no probes), then the
        app.state inventory under "inventory" if asked. Not started: "startup_error" with the
        error's type and step. Last, "milestones": every normalized milestone.
        """
        result: dict[str, Any] = {}
        if self.started:
            if isinstance(probe_paths, str):
                result[probe_paths.strip("/")] = (await self.probe([probe_paths]))[probe_paths]
            elif probe_paths is not None:
                result["probes"] = await self.probe(probe_paths)
            if inventory:
                result["inventory"] = self.inventory()
            await self.stop()
        else:
            result["startup_error"] = {
                "type": type(self.startup_error).__name__,
                "step": getattr(self.startup_error, "step", None),
            }
        result["milestones"] = self.normalized_milestones()
        return result

    @property
    def running(self) -> bool:
        """Started and not stopped yet."""
        owner = self._owner or self
        return owner.started and owner._lifespan is not None

    def view(self) -> RunningApp:
        """The same started app with a client of its own; its `stop()` stops the app,
        `release()` only closes its client."""
        owner = self._owner or self
        return RunningApp(app=self.app, settings=self.settings, recorder=self.recorder,
                          normalizer=self.normalizer, client=_client(self.app), _owner=owner)

    async def release(self) -> None:
        """Close this view's client; the app keeps running."""
        if self.client is not None:
            await self.client.aclose()

    async def stop(self) -> None:
        """Run the shutdown half of the lifespan once; later calls do nothing."""
        if self._owner is not None:
            await self.release()
            await self._owner.stop()
            return
        lifespan, self._lifespan = self._lifespan, None
        try:
            await self.release()
            if lifespan is not None:
                await lifespan.__aexit__(None, None, None)
        finally:
            self.recorder.detach()


async def start_app(factory: AppFactory, settings: Any,
                    normalizer: Normalizer | None = None) -> RunningApp:
    """Build the app with `settings` and run its startup; a startup error is kept, not raised.

    Its recorder keeps the milestones of this app only.
    """
    recorder = MilestoneRecorder()
    running = RunningApp(app=None, settings=settings, recorder=recorder,  # type: ignore[arg-type]
                         normalizer=normalizer or Normalizer())
    try:
        running.app = recorder.app = factory(settings)
        # What building the app logged (the build phase) came before the recorder was bound.
        timeline = getattr(running.app.state, "startup", None)
        recorder.records += [record.milestone() for record in getattr(timeline, "records", ())]
        recorder.attach()
        lifespan = running.app.router.lifespan_context(running.app)
        await lifespan.__aenter__()
    except Exception as exc:
        running.startup_error = exc
        recorder.detach()
        return running
    running._lifespan = lifespan
    running.client = _client(running.app)
    return running


def _client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


async def started(app_factory: Callable[..., Any], settings: Any = None) -> RunningApp:
    """`await app_factory(settings)`, asserting that the app did start."""
    running = await app_factory(settings)
    assert running.started, running.startup_error
    return running
