"""One set of servers per pytest run, xdist workers included.

The process that runs the session (the xdist controller, or pytest itself without xdist)
starts the services the first time they are needed, hands their endpoints to each worker
through `workerinput`, and stops them once at the end. Workers never start or stop any.
"""

from __future__ import annotations

import atexit
import time

from pixsim7_testing.endpoints import PostgresEndpoint
from pixsim7_testing.host import run_sync
from pixsim7_testing.isolation import admin_connection
from pixsim7_testing.ownership import database_prefix, reap_databases
from pixsim7_testing.services import ServiceSet, ServiceStartError, select_backend

WORKERINPUT_KEY = "pixsim7_services"
HINT = ("(the pixsim7 testing kit could not start its services; "
        "see GETTING_STARTED.md, 'Testing kit')")


class RunServices:
    """The run's services: started lazily by their owner, or handed over by the controller."""

    def __init__(self, services: ServiceSet | None = None, error: str | None = None,
                 owner: bool = True) -> None:
        self.services, self.error, self.owner = services, error, owner
        self.start_seconds: float | None = None
        self.stop_seconds: float | None = None
        self.reaped: list[str] = []

    @classmethod
    def from_workerinput(cls, data: dict) -> RunServices:
        services = ServiceSet.from_dict(data["services"]) if data.get("services") else None
        return cls(services, data.get("error"), owner=False)

    def get(self) -> ServiceSet:
        """The started services; raises the start failure (the same one for every caller)."""
        if self.services is None and self.error is None and self.owner:
            self._start()
        if self.services is None:
            raise ServiceStartError(self.error or f"no services were handed over {HINT}")
        return self.services

    def _start(self) -> None:
        began = time.perf_counter()
        try:
            self.services = select_backend().start()
        except ServiceStartError as exc:
            self.error = f"{exc}\n{HINT}"
            return
        except Exception as exc:  # raised in xdist's controller, it would end the run unexplained
            self.error = f"services did not start: {type(exc).__name__}: {exc}\n{HINT}"
            return
        self.start_seconds = time.perf_counter() - began
        atexit.register(self.services.stop)  # also after Ctrl-C or a crash of the session
        # A shared server (external, a CI's service container) keeps what a killed run made:
        # the databases whose owner is gone go now, by their owner stamp.
        try:
            self.reaped = run_sync(lambda: _reap_databases(self.services.postgres))
        except Exception as exc:  # the run goes on; what was left stays, said at the end
            self.reaped = [f"(none: looking for them failed with {type(exc).__name__}: {exc})"]

    def workerinput(self) -> dict:
        """What a worker needs: the endpoints, or the message every test there must fail with."""
        try:
            return {"services": self.get().to_dict()}
        except ServiceStartError as exc:
            return {"error": str(exc)}

    def stop(self) -> None:
        if self.owner and self.services is not None and self.stop_seconds is None:
            began = time.perf_counter()
            self.services.stop()
            self.stop_seconds = time.perf_counter() - began

    def summary(self) -> str | None:
        """One line: what ran and how long it took to start and stop; None if nothing started."""
        if not self.owner or self.start_seconds is None:
            return None
        stopped = f", stopped in {self.stop_seconds:.2f}s" if self.stop_seconds is not None else ""
        reaped = (f"\npixsim7 kit: dropped {len(self.reaped)} database(s) a killed session left: "
                  f"{', '.join(self.reaped)}" if self.reaped else "")
        return (f"pixsim7 services: {self.services.describe()}: "
                f"started in {self.start_seconds:.2f}s{stopped}{reaped}")


async def _reap_databases(endpoint: PostgresEndpoint) -> list[str]:
    conn = await admin_connection(endpoint)
    try:
        return await reap_databases(conn, database_prefix())
    finally:
        await conn.close()
