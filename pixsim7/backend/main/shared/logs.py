"""Process logging from the settings: LOG_LEVEL, and LOG_FORMAT `text` or `json`.

Whatever a record says, its traceback included, no credential reaches the log: the values of
the app's secrets (as they are, percent-encoded or base64-encoded), and anything a client may
pass as one (`admin_token=`, `client_secret=` ... in a query string, `"password": ...` in JSON,
an `X-Api-Key` header, a Bearer, Basic or Token credential), are replaced by `***`. In the
text format, control characters are escaped, so what a client sent (a path with CR LF in it)
cannot start a line of its own.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, quote_plus

TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
# What every LogRecord has; anything else on a record came from `extra=`. uvicorn's
# `color_message` is its message again with terminal colour codes: noise in JSON.
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "color_message"}


REDACTED = "***"
# A name that says its value is a credential, whatever comes before it: `token`, `admin_token`,
# `client_secret`, `db_password`, `X-Api-Key`, `refresh_token`.
_CREDENTIAL_NAME = (r"[\w.-]*(?:token|api[_-]?key|key|password|passwd|pwd|secret|session|auth"
                    r"|credentials?)")
# ... as a query parameter or form field (`name=value`), a header (`X-Api-Key: value`), and a
# JSON or dict item (`"password": "value"`, `'api_key': 'value'`).
_CREDENTIAL_FIELD = re.compile(rf"(?i)(\b{_CREDENTIAL_NAME}=)[^&\s\"']*")
_CREDENTIAL_HEADER = re.compile(r"(?i)(\bx-[\w-]*(?:key|token|secret)\s*:\s*)[^\s,;]+")
_CREDENTIAL_ITEM = re.compile(
    rf"""(?i)((["']){_CREDENTIAL_NAME}\2\s*:\s*)(["'])(?:\\.|(?!\3).)*\3""")
# The value of an Authorization-style header, as schemes are written.
_SCHEME = re.compile(r"\b(Bearer|Basic|Token|Digest)\s+[A-Za-z0-9._~+/=-]{6,}")
MIN_SECRET_LENGTH = 8  # a shorter value would match ordinary text (and is no secret anyway)


def _written_forms(secret: str) -> set[str]:
    """`secret` as it may appear in a log line: as is, percent-encoded, base64-encoded."""
    raw = secret.encode()
    forms = {secret, quote(secret, safe=""), quote_plus(secret),
             base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()}
    return forms | {form.rstrip("=") for form in forms}


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
        self.secrets = sorted({form for secret in secrets
                               if secret and len(secret) >= MIN_SECRET_LENGTH
                               for form in _written_forms(secret)}, key=len, reverse=True)

    def add(self, secrets: Iterable[str | None]) -> None:
        """Redact `secrets` too (those learnt after logging was set up)."""
        self.secrets = Redactor([*self.secrets, *secrets]).secrets

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        text = _CREDENTIAL_FIELD.sub(lambda m: m.group(1) + REDACTED, text)
        text = _CREDENTIAL_HEADER.sub(lambda m: m.group(1) + REDACTED, text)
        text = _CREDENTIAL_ITEM.sub(lambda m: f"{m.group(1)}{m.group(3)}{REDACTED}{m.group(3)}",
                                    text)
        return _SCHEME.sub(lambda m: f"{m.group(1)} {REDACTED}", text)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = self.redact(message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS and isinstance(value, str):
                setattr(record, key, self.redact(value))
        # A traceback quotes what the code held (SQL parameters, a request's values): it is
        # written once here, redacted, and the formatters use this text.
        if record.exc_info and not record.exc_text:
            record.exc_text = _PLAIN.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


_PLAIN = logging.Formatter()


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

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_text:  # formatted (and redacted) by the Redactor: escaped here
            record.exc_text = escape_controls(record.exc_text, keep="\n")
        return super().format(record)

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
        if record.exc_text or record.exc_info:
            data["exception"] = record.exc_text or self.formatException(record.exc_info)
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
