"""Process logging from the settings: LOG_LEVEL, and LOG_FORMAT `text` or `json`.

Whatever a record says, no credential reaches the log: the values of the app's secrets, and
anything a client may pass as one (`token=`, `password=`, ... in a query string, a Bearer
credential), are replaced by `***`. In the text format, control characters are escaped, so
what a client sent (a path with CR LF in it) cannot start a line of its own.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
# What every LogRecord has; anything else on a record came from `extra=`. uvicorn's
# `color_message` is its message again with terminal colour codes: noise in JSON.
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "color_message"}


REDACTED = "***"
# A credential a client may put where a log line repeats it: a query parameter or a form field
# named like one, or the value of an Authorization-style header.
_CREDENTIAL_FIELD = re.compile(
    r"(?i)(\b(?:access_?token|api_?key|auth|key|password|passwd|secret|session|token)=)[^&\s\"']*")
_BEARER = re.compile(r"\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]{6,}")  # as schemes are written
MIN_SECRET_LENGTH = 8  # a shorter value would match ordinary text (and is no secret anyway)

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape_controls(text: str, keep: str = "") -> str:
    """`text` with each control character (C0, DEL, C1) written as an escape: `\\r`, `\\x1b`."""
    return _CONTROL.sub(lambda m: m.group() if m.group() in keep else _NAMED.get(
        m.group(), f"\\x{ord(m.group()):02x}"), text)


class Redactor(logging.Filter):
    """Replaces credentials in each record's message and string fields with `***`."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        super().__init__()
        # Longest first, so a secret that contains another is replaced whole.
        self.secrets = sorted({s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH},
                              key=len, reverse=True)

    def add(self, secrets: Iterable[str | None]) -> None:
        """Redact `secrets` too (those learnt after logging was set up)."""
        self.secrets = Redactor([*self.secrets, *secrets]).secrets

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        text = _CREDENTIAL_FIELD.sub(lambda m: m.group(1) + REDACTED, text)
        return _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = self.redact(message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS and isinstance(value, str):
                setattr(record, key, self.redact(value))
        return True


class TextFormatter(logging.Formatter):
    """TEXT_FORMAT with control characters escaped: one record, one line (a traceback keeps
    its line breaks, nothing else)."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        original = record.message
        record.message = escape_controls(original)
        try:
            return super().formatMessage(record)
        finally:
            record.message = original

    def formatException(self, ei: Any) -> str:  # noqa: N802 - logging's name
        return escape_controls(super().formatException(ei), keep="\n")

    def formatStack(self, stack_info: str) -> str:  # noqa: N802 - logging's name
        return escape_controls(super().formatStack(stack_info), keep="\n")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, then the record's extra fields
    (a `milestone` dict spread into keys)."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        extra = {key: value for key, value in vars(record).items() if key not in _RECORD_FIELDS}
        if isinstance(extra.get("milestone"), dict):
            extra = {**extra.pop("milestone"), **extra}
        for key, value in extra.items():
            data.setdefault(key, value)  # an extra field never hides a standard one
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            data["stack"] = self.formatStack(record.stack_info)
        return json.dumps(data, default=str)


def redact_also(secrets: Iterable[str | None]) -> None:
    """Add `secrets` to what the root logger's handlers redact: the passwords of the embedded
    servers, for one, which exist only once those servers have started."""
    for handler in logging.getLogger().handlers:
        for each in handler.filters:
            if isinstance(each, Redactor):
                each.add(secrets)


# The loggers a server may have set up its own way before the app was imported.
_SERVER_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "gunicorn.error",
                   "gunicorn.access", "hypercorn.error", "hypercorn.access")
# Servers' access lines: the app writes one per request itself (`pixsim7.requests`).
_ACCESS_LOGGERS = frozenset({"uvicorn.access", "gunicorn.access", "hypercorn.access"})


def configure_logging(level: str, log_format: str, secrets: Iterable[str | None] = ()) -> None:
    """Send the root logger's records to stderr at `level`, as text or JSON lines, with
    `secrets` (and credentials a client sent) redacted. A server's own loggers (uvicorn's,
    gunicorn's, hypercorn's) go the same way, and their access lines are dropped."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(Redactor(secrets))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    for name in _SERVER_LOGGERS:
        server_logger = logging.getLogger(name)
        server_logger.handlers.clear()
        server_logger.setLevel(logging.NOTSET)
        server_logger.propagate = name not in _ACCESS_LOGGERS
        server_logger.disabled = name in _ACCESS_LOGGERS
