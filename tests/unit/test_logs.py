"""JSON log lines: structured fields, and secrets never written."""

from __future__ import annotations

import json
import logging

from elsa.infra.logs import REDACTED, JsonFormatter, redact
from elsa.infra.web import warn_placeholder_secrets


def _line(msg: str, *args: object, **extra: object) -> dict[str, object]:
    record = logging.LogRecord("elsa.test", logging.WARNING, __file__, 1, msg, args, None)
    for key, value in extra.items():
        setattr(record, key, value)
    data: dict[str, object] = json.loads(JsonFormatter("cloud").format(record))
    return data


def test_fields_are_structured() -> None:
    line = _line("round %d committed", 3, run_id="r-1", round=3, size_bytes=1024, ratio=0.5)
    assert line["msg"] == "round 3 committed"
    assert line["service"] == "cloud" and line["level"] == "warning" and line["logger"] == "elsa.test"
    assert (line["run_id"], line["round"], line["size_bytes"], line["ratio"]) == ("r-1", 3, 1024, 0.5)


def test_secret_fields_are_dropped_whatever_their_value() -> None:
    line = _line(
        "joined",
        token="abc",
        session_token="def",
        join_secret="s3",
        admin_token="adm",
        password="pw",
        authorization="Bearer x",
    )
    for key in ("token", "session_token", "join_secret", "admin_token", "password", "authorization"):
        assert line[key] == REDACTED, key
    assert "abc" not in json.dumps(line) and "s3" not in json.dumps(line)


def test_url_passwords_and_bearer_tokens_are_masked_in_any_text() -> None:
    url = "postgresql+asyncpg://elsa:hunter2@db:5432/elsa"
    line = _line("cannot reach %s", url, database=url, detail="header Authorization: Bearer tok.en-123")
    text = json.dumps(line)
    assert "hunter2" not in text and "tok.en-123" not in text
    assert line["msg"] == f"cannot reach postgresql+asyncpg://elsa:{REDACTED}@db:5432/elsa"
    assert line["database"] == f"postgresql+asyncpg://elsa:{REDACTED}@db:5432/elsa"
    # what is not a secret is left alone
    assert redact("redis://redis:6379/0") == "redis://redis:6379/0"
    assert redact("sqlite+aiosqlite:///runs/elsa.db") == "sqlite+aiosqlite:///runs/elsa.db"


def test_exceptions_are_masked_too() -> None:
    try:
        raise RuntimeError("connect to postgresql://u:topsecret@h/db failed")
    except RuntimeError:
        import sys

        record = logging.LogRecord("elsa.test", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = json.loads(JsonFormatter("edge").format(record))
    assert "topsecret" not in line["exc"] and REDACTED in line["exc"]


def test_placeholder_secrets_are_named_at_startup() -> None:
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("elsa.infra.web")
    logger.addHandler(handler)
    try:
        names = warn_placeholder_secrets("cloud", join_secret="change-me", admin_token="s3cr3t-value")
        assert names == ["join_secret"]
        assert warn_placeholder_secrets("edge", join_secret="a-real-secret") == []
    finally:
        logger.removeHandler(handler)
    assert len(records) == 1 and records[0].__dict__["settings"] == "join_secret"
    assert "s3cr3t-value" not in JsonFormatter("cloud").format(records[0])
