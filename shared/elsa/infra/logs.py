"""Structured logs for the services: one JSON object per line, ids as fields.

Only ELSA's own loggers (``elsa*``) get the handler, so libraries keep their configuration.
Idempotent: calling it again (several apps in one test process) does not duplicate output.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}
_HANDLER_NAME = "elsa-json"
#: fields whose values are never written, whatever a caller passes
_SECRET_FIELD = re.compile(r"token|secret|password|passwd|authorization|api_key|cookie", re.IGNORECASE)
#: credentials inside URLs (scheme://user:password@host)
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):[^@/\s]+@", re.IGNORECASE)
#: bearer tokens inside free text (an error detail quoting a header, say)
_BEARER = re.compile(r"(bearer\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE)
REDACTED = "[redacted]"


def redact(text: str) -> str:
    """``text`` with URL passwords and bearer tokens replaced by ``[redacted]``."""
    text = _URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:{REDACTED}@", text)
    return _BEARER.sub(lambda m: m.group(1) + REDACTED, text)


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "service", "msg", ...extra fields}``; never tensors or secrets:
    callers log sizes and ids only, and as a second line of defence fields named like secrets
    are dropped and URL passwords and bearer tokens in any text are masked."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "service": self.service,
            "msg": redact(record.getMessage()),
        }
        for key, value in record.__dict__.items():
            if key in _STANDARD or key.startswith("_"):
                continue
            if _SECRET_FIELD.search(key):
                data[key] = REDACTED
            elif isinstance(value, str):
                data[key] = redact(value)
            elif isinstance(value, (int, float, bool, type(None))):
                data[key] = value
            else:
                data[key] = redact(str(value))
        if record.exc_info:
            data["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(data)


def configure_logging(service: str, level: str = "INFO") -> None:
    """Send ``elsa`` and ``elsa_<service>`` logs to stderr as JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(JsonFormatter(service))
    for name in ("elsa", f"elsa_{service}"):
        logger = logging.getLogger(name)
        logger.setLevel(level.upper())
        if not any(h.get_name() == _HANDLER_NAME for h in logger.handlers):
            logger.addHandler(handler)
        logger.propagate = False
