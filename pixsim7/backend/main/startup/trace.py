"""An app's startup and shutdown as Chrome Trace Event JSON, which ui.perfetto.dev and
chrome://tracing open as they are.

One complete event (`ph: "X"`) per step, on a track per phase (build, startup, shutdown), with
its policy, status, counts and error class in `args`; one instant event (`ph: "i"`) per
milestone, at the moment it was logged. Times are microseconds from the first step's start.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from pixsim7.backend.main.startup.timeline import StartupTimeline

PHASE_TRACKS = {"build": 1, "startup": 2, "shutdown": 3}
PROCESS_ID = 1


def trace_events(timeline: StartupTimeline) -> dict[str, Any]:
    """The trace of `timeline`: {"traceEvents": [...], "displayTimeUnit": "ms", ...}."""
    timed = [r for r in timeline.records if r.started is not None]
    origin = min((r.started for r in timed), default=0.0)
    events: list[dict[str, Any]] = [
        {"ph": "M", "pid": PROCESS_ID, "tid": 0, "name": "process_name",
         "args": {"name": f"pixsim7 {timeline.profile or 'api'}"}},
        *({"ph": "M", "pid": PROCESS_ID, "tid": tid, "name": "thread_name",
           "args": {"name": phase}} for phase, tid in PHASE_TRACKS.items()),
    ]
    for record in timed:
        begin = (record.started - origin) * 1e6
        duration = record.duration_ms * 1000
        args: dict[str, Any] = {"policy": record.policy, "status": record.status,
                                **record.counts}
        if record.error is not None:
            args["error"] = record.error.split(":", 1)[0]  # the class: no message, no URL
        tid = PHASE_TRACKS.get(record.phase, 0)
        events.append({"ph": "X", "name": record.step, "cat": record.phase, "pid": PROCESS_ID,
                       "tid": tid, "ts": round(begin, 1), "dur": round(duration, 1),
                       "args": args})
        events.append({"ph": "i", "s": "t", "name": f"{record.phase} {record.step}: "
                       f"{record.status}", "cat": "milestone", "pid": PROCESS_ID, "tid": tid,
                       "ts": round(begin + duration, 1), "args": record.milestone()})
    return {"traceEvents": events, "displayTimeUnit": "ms",
            "otherData": {"profile": timeline.profile, "app_id": timeline.app_id}}


class TraceFileError(ValueError):
    """The trace cannot be written where asked; the message says why."""


def check_trace_path(path: Path | str) -> Path:
    """`path` as a file a trace can be written to (its folder made if need be), or a
    TraceFileError saying why not: a folder, a folder that takes no file, a file as a folder."""
    target = Path(path).expanduser()
    if target.is_dir():
        raise TraceFileError(f"{target} is a folder; name a file in it")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise TraceFileError(f"cannot write {target}: {exc.strerror or exc}") from None
    return target


def write_trace(timeline: StartupTimeline, path: Path | str) -> Path:
    """Write the trace of `timeline` to `path` (its folder made if need be); the path."""
    return write_text(json.dumps(trace_events(timeline), default=str), path)


def write_text(text: str, path: Path | str) -> Path:
    """Write `text` to `path` (its folder made if need be); the path.

    Written to a new private file beside it, then renamed over it: a link planted at `path`
    is replaced, never followed.
    """
    target = check_trace_path(path)
    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return target
