"""SQLAlchemy 2 ORM schema of the cloud's durable state (DESIGN §5).

One table per concept: nodes, runs, rounds, participation, metrics, byte counts, adapter versions
and snapshots of the Redis-held state. The Alembic revisions under
:mod:`elsa.infra.migrations` create exactly this schema; a test keeps the two equal.
Rows are private to :mod:`elsa.infra.sql`, which hands out the frozen records of
:mod:`elsa.infra.records` built by each row's ``record()``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar, cast

from sqlalchemy import JSON, BigInteger, DateTime, Double, ForeignKey, Integer, MetaData, String, Text
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from elsa.infra.records import (
    AdapterVersionRecord,
    MetricRecord,
    NodeRecord,
    ParticipationRecord,
    Role,
    RoundRecord,
    RoundState,
    RunRecord,
    RunState,
    SnapshotKind,
    SnapshotRecord,
)

ID_LEN = 128
"""Maximum length of every id and name column."""


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend.

    PostgreSQL stores ``timestamptz``; SQLite has no zone, so values are stored as naive UTC and
    get their zone back on the way out. Values are converted to UTC on the way in.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Convert to UTC (naive UTC for SQLite)."""
        if value is None:
            return None
        utc = value.astimezone(UTC)
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Return an aware UTC datetime."""
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base holding the ELSA metadata (with a constraint naming convention)."""

    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UtcDateTime(), dict[str, Any]: JSON()}


def _run_fk() -> Any:
    return ForeignKey("runs.run_id")


class NodeRow(Base):
    """A registered edge or device."""

    __tablename__ = "nodes"

    node_id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(ID_LEN))
    url: Mapped[str | None] = mapped_column(String(512))
    capacity: Mapped[int | None] = mapped_column(Integer)
    token_hash: Mapped[str] = mapped_column(String(ID_LEN), unique=True)
    joined_at: Mapped[datetime]
    resources: Mapped[dict[str, Any]]

    def record(self) -> NodeRecord:
        """This row as an immutable record."""
        return NodeRecord(
            node_id=self.node_id,
            role=cast(Role, self.role),
            name=self.name,
            url=self.url,
            capacity=self.capacity,
            token_hash=self.token_hash,
            joined_at=self.joined_at,
            resources=dict(self.resources),
        )


class RunRow(Base):
    """A fine-tuning run."""

    __tablename__ = "runs"

    run_id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    name: Mapped[str] = mapped_column(String(ID_LEN))
    state: Mapped[str] = mapped_column(String(16))
    config: Mapped[dict[str, Any]]
    cloud_rounds: Mapped[int] = mapped_column(Integer)
    current_round: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    def record(self) -> RunRecord:
        """This row as an immutable record."""
        return RunRecord(
            run_id=self.run_id,
            name=self.name,
            state=cast(RunState, self.state),
            config=dict(self.config),
            cloud_rounds=self.cloud_rounds,
            current_round=self.current_round,
            created_at=self.created_at,
            updated_at=self.updated_at,
        )


class RoundRow(Base):
    """One cloud round of a run (state machine training → aggregating → completed | abandoned)."""

    __tablename__ = "rounds"

    run_id: Mapped[str] = mapped_column(String(ID_LEN), _run_fk(), primary_key=True)
    round: Mapped[int] = mapped_column(Integer, primary_key=True)
    state: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]

    def record(self) -> RoundRecord:
        """This row as an immutable record."""
        return RoundRecord(
            run_id=self.run_id,
            round=self.round,
            state=cast(RoundState, self.state),
            started_at=self.started_at,
            updated_at=self.updated_at,
            finished_at=self.finished_at,
        )


class ParticipationRow(Base):
    """One participation event; unique per (run, round, node, status)."""

    __tablename__ = "participation"

    run_id: Mapped[str] = mapped_column(String(ID_LEN), _run_fk(), primary_key=True)
    round: Mapped[int] = mapped_column(Integer, primary_key=True)
    node_id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    status: Mapped[str] = mapped_column(String(32), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime]

    def record(self) -> ParticipationRecord:
        """This row as an immutable record."""
        return ParticipationRecord(
            run_id=self.run_id,
            round=self.round,
            node_id=self.node_id,
            role=cast(Role, self.role),
            status=self.status,
            detail=self.detail,
            at=self.at,
        )


class MetricRow(Base):
    """One named metric of a node in a round; upserted."""

    __tablename__ = "metrics"

    run_id: Mapped[str] = mapped_column(String(ID_LEN), _run_fk(), primary_key=True)
    round: Mapped[int] = mapped_column(Integer, primary_key=True)
    node_id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    name: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    value: Mapped[float] = mapped_column(Double)
    at: Mapped[datetime]

    def record(self) -> MetricRecord:
        """This row as an immutable record."""
        return MetricRecord(
            run_id=self.run_id,
            round=self.round,
            node_id=self.node_id,
            name=self.name,
            value=self.value,
            at=self.at,
        )


class ByteCountRow(Base):
    """Bytes a node moved in a round, per kind (accumulated); ``at`` is the last addition."""

    __tablename__ = "byte_counts"

    run_id: Mapped[str] = mapped_column(String(ID_LEN), _run_fk(), primary_key=True)
    round: Mapped[int] = mapped_column(Integer, primary_key=True)
    node_id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    kind: Mapped[str] = mapped_column(String(64), primary_key=True)
    nbytes: Mapped[int] = mapped_column(BigInteger)
    at: Mapped[datetime]


class AdapterVersionRow(Base):
    """A global adapter version: blob path, SHA-256 and size."""

    __tablename__ = "adapter_versions"

    run_id: Mapped[str] = mapped_column(String(ID_LEN), _run_fk(), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    round: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(String(1024))
    sha256: Mapped[str] = mapped_column(String(64))
    nbytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime]

    def record(self) -> AdapterVersionRecord:
        """This row as an immutable record."""
        return AdapterVersionRecord(
            run_id=self.run_id,
            version=self.version,
            round=self.round,
            path=self.path,
            sha256=self.sha256,
            nbytes=self.nbytes,
            created_at=self.created_at,
        )


class SnapshotRow(Base):
    """A snapshot of Redis-held state of one kind at one round; upserted."""

    __tablename__ = "snapshots"

    run_id: Mapped[str] = mapped_column(String(ID_LEN), _run_fk(), primary_key=True)
    round: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    payload: Mapped[dict[str, Any]]
    at: Mapped[datetime]

    def record(self) -> SnapshotRecord:
        """This row as an immutable record."""
        return SnapshotRecord(
            run_id=self.run_id,
            round=self.round,
            kind=cast(SnapshotKind, self.kind),
            payload=dict(self.payload),
            at=self.at,
        )
