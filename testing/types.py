"""The shapes of the kit's factory fixtures, for a type checker and an editor."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from pixsim7_testing.apps import AppFactory, RunningApp
    from pixsim7_testing.processes import BackendProcess
    from pixsim7_testing.proxy import FaultProxy

    from pixsim7.backend.main.shared.config import Settings


class MakeSettings(Protocol):
    """`make_settings`: Settings aimed at the test's database and Redis, with `overrides`;
    `database_proxy=` / `redis_proxy=` route the app through a `fault_proxy`."""

    def __call__(self, *, database_proxy: FaultProxy | None = None,
                 redis_proxy: FaultProxy | None = None, **overrides: Any) -> Settings: ...


class StartApp(Protocol):
    """`app_factory`: build an app (with `make_settings()` unless given settings) and run its
    startup; a failed startup is kept on the RunningApp, not raised."""

    async def __call__(self, settings: Settings | None = None,
                       factory: AppFactory | str | None = None) -> RunningApp: ...


class StartProcess(Protocol):
    """`backend_processes`: a started `pixsim7-backend` command (or `arq`, `uvicorn`)."""

    def __call__(self, command: str, env: dict[str, str], *, cwd: Path | None = None,
                 **kwargs: Any) -> BackendProcess: ...


class MakeFaultProxy(Protocol):
    """`fault_proxy`: a started proxy in front of a service, to cut or blackhole it."""

    def __call__(self, service: Literal["postgres", "redis"]) -> FaultProxy: ...
