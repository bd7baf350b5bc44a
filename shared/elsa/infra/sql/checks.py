"""Input checks of the SQL store: bad values become :class:`~elsa.errors.ConfigError` before any
write, so a caller's mistake is a 4xx and never a half-applied change (DESIGN §5).

Every check returns the (normalised) value it accepted and never mutates its input.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any, TypeVar

from elsa.errors import ConfigError
from elsa.infra.sql.models import ID_LEN

S = TypeVar("S", bound=str)

_SHA256 = re.compile(r"[0-9a-f]{64}")


def short_text(value: str, what: str, *, max_len: int = ID_LEN) -> str:
    """A non-empty string of at most ``max_len`` characters (ids, names, kinds, paths)."""
    if not isinstance(value, str) or not value or len(value) > max_len:
        raise ConfigError(f"{what} must be a non-empty string of at most {max_len} characters")
    return value


def check_in(value: S, allowed: Collection[str], what: str) -> S:
    """``value`` if it is one of ``allowed``."""
    if value not in allowed:
        raise ConfigError(f"{what} must be one of {sorted(allowed)}, got {value!r}")
    return value


def non_negative(value: int, what: str, *, minimum: int = 0) -> int:
    """An ``int`` (not ``bool``) ≥ ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return value


def finite(value: float, what: str) -> float:
    """A finite real number, as ``float``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"metric {what!r} must be a finite number, got {value!r}")
    return float(value)


def aware(value: datetime, what: str) -> datetime:
    """A timezone-aware datetime, converted to UTC (the store never reads the clock)."""
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise ConfigError(f"{what} must be a timezone-aware datetime")
    return value.astimezone(UTC)


def json_object(value: dict[str, Any], what: str) -> dict[str, Any]:
    """A deep copy of a JSON object (string keys, finite numbers, JSON values only)."""
    if not isinstance(value, dict):
        raise ConfigError(f"{what} must be a JSON object")
    try:
        copy: dict[str, Any] = json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{what} is not JSON-serialisable: {e}") from e
    if any(not isinstance(k, str) for k in value):
        raise ConfigError(f"{what} must have string keys")
    return copy


def sha256_hex(value: str) -> str:
    """A SHA-256 digest as 64 lowercase hex characters (upper case is accepted and lowered)."""
    digest = value.lower() if isinstance(value, str) else ""
    if not _SHA256.fullmatch(digest):
        raise ConfigError("sha256 must be 64 hexadecimal characters")
    return digest
