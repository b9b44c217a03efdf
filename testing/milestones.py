"""Capture of the structured startup milestones an app logs on `pixsim7.startup`.

A milestone record names its app with `extra={"app_id": app.state.app_id}`; a recorder bound
to an app keeps only that app's records, so two apps in one test never mix.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import FastAPI

STARTUP_LOGGER = "pixsim7.startup"


class MilestoneRecorder(logging.Handler):
    """Keeps the `milestone` field of each record, in order; the message text is ignored.

    Bound to `app`, it keeps only records tagged with that app's `app.state.app_id`.
    """

    def __init__(self, app: FastAPI | None = None) -> None:
        super().__init__(level=logging.DEBUG)
        self.app = app
        self.records: list[dict[str, Any]] = []
        self._logger: logging.Logger | None = None
        self._previous_level = logging.NOTSET

    def attach(self, logger_name: str = STARTUP_LOGGER) -> MilestoneRecorder:
        """Start recording from `logger_name` (lowering its level to INFO if needed)."""
        logger = logging.getLogger(logger_name)
        self._logger, self._previous_level = logger, logger.level
        if logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)
        logger.addHandler(self)
        return self

    def detach(self) -> None:
        """Stop recording; safe to call twice."""
        if self._logger is not None:
            self._logger.removeHandler(self)
            self._logger.setLevel(self._previous_level)
            self._logger = None

    def emit(self, record: logging.LogRecord) -> None:
        milestone = getattr(record, "milestone", None)
        if self.app is not None:
            tag = getattr(record, "app_id", None)
            if tag is None or tag != getattr(self.app.state, "app_id", None):
                return
        if isinstance(milestone, dict):
            self.records.append(dict(milestone))

    def phase(self, phase: str) -> list[dict[str, Any]]:
        return [m for m in self.records if m.get("phase") == phase]

    def steps(self, phase: str = "startup") -> list[tuple[str, str]]:
        """(step, status) pairs of one phase, in the order they were logged."""
        return [(m["step"], m["status"]) for m in self.phase(phase)]


@contextmanager
def record_milestones(app: FastAPI | None = None,
                      logger_name: str = STARTUP_LOGGER) -> Iterator[MilestoneRecorder]:
    """Record the milestones of `app` (of every app when None) for the duration of the block."""
    recorder = MilestoneRecorder(app).attach(logger_name)
    try:
        yield recorder
    finally:
        recorder.detach()
