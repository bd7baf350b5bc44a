"""Structured logs for the services: one JSON object per line, ids as fields.

Only ELSA's own loggers (``elsa*``) get the handler, so libraries keep their configuration.
Idempotent: calling it again (several apps in one test process) does not duplicate output.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}
_HANDLER_NAME = "elsa-json"


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "service", "msg", ...extra fields}``; never tensors or secrets
    (callers log sizes and ids only)."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "service": self.service,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                data[key] = value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
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
