"""An app's startup timeline (`app.state.startup`): each step's record, built, up and down.

Each record is also one log line on `pixsim7.startup` with a structured `milestone` attribute
and the `app_id` of its app.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI

logger = logging.getLogger("pixsim7.startup")


@dataclass
class StepRecord:
    phase: str
    step: str
    policy: str
    status: str
    duration_ms: float
    counts: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    started: float | None = None  # time.perf_counter() when the step began, for traces

    def milestone(self) -> dict[str, Any]:
        data = {"phase": self.phase, "step": self.step, "status": self.status,
                "policy": self.policy, **self.counts}
        if self.error is not None:
            data["error"] = self.error.split(":", 1)[0]  # the class name: no message, no URL
        return data


class StartupTimeline:
    """The steps an app ran, built, up and down, with status and timing (`app.state.startup`)."""

    def __init__(self, app_id: str | None = None) -> None:
        self.records: list[StepRecord] = []
        self.profile: str | None = None
        self.app_id = app_id  # tags each record as its app's

    def add(self, record: StepRecord) -> None:
        self.records.append(record)
        message = f"{record.phase} {record.step}: {record.status} ({record.duration_ms:.0f} ms)"
        if record.error:
            message += f" - {record.error}"
        level = {"failed": logging.ERROR, "degraded": logging.WARNING}.get(record.status,
                                                                          logging.INFO)
        logger.log(level, message, extra={"milestone": record.milestone(), "app_id": self.app_id})

    def status(self, step: str, phase: str = "startup") -> str | None:
        found = [r.status for r in self.records if r.step == step and r.phase == phase]
        return found[-1] if found else None

    def summary(self) -> dict[str, Any]:
        return {"profile": self.profile, "steps": [
            {"phase": r.phase, "step": r.step, "policy": r.policy, "status": r.status,
             "duration_ms": round(r.duration_ms, 1), "error": r.error, **r.counts}
            for r in self.records
        ]}


def app_id(app: FastAPI) -> str:
    """The id that `app`'s milestone records carry (`app.state.app_id`), made on first use."""
    if not isinstance(getattr(app.state, "app_id", None), str):
        app.state.app_id = uuid.uuid4().hex
    return app.state.app_id


def startup_timeline(app: FastAPI) -> StartupTimeline:
    """`app.state.startup`, made on first use (the one place that writes it)."""
    if not isinstance(getattr(app.state, "startup", None), StartupTimeline):
        app.state.startup = StartupTimeline(app_id(app))
    return app.state.startup
