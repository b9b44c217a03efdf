"""Capture of the structured startup milestones an app logs on `pixsim7.startup`."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

STARTUP_LOGGER = "pixsim7.startup"


class MilestoneRecorder(logging.Handler):
    """Keeps the `milestone` field of each record, in order; the message text is ignored."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        milestone = getattr(record, "milestone", None)
        if isinstance(milestone, dict):
            self.records.append(dict(milestone))

    def phase(self, phase: str) -> list[dict[str, Any]]:
        return [m for m in self.records if m.get("phase") == phase]

    def steps(self, phase: str = "startup") -> list[tuple[str, str]]:
        """(step, status) pairs of one phase, in the order they were logged."""
        return [(m["step"], m["status"]) for m in self.phase(phase)]


@contextmanager
def record_milestones(logger_name: str = STARTUP_LOGGER) -> Iterator[MilestoneRecorder]:
    """Attach a recorder to the startup logger for the duration of the block."""
    logger = logging.getLogger(logger_name)
    recorder = MilestoneRecorder()
    previous_level = logger.level
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    logger.addHandler(recorder)
    try:
        yield recorder
    finally:
        logger.removeHandler(recorder)
        logger.setLevel(previous_level)
