"""Initial schema: nodes, runs, rounds, participation, metrics, byte counts, adapter versions,
snapshots (DESIGN §5).

Revision ID: 0001
Revises:
Create Date: 2026-01-01
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _run_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(["run_id"], ["runs.run_id"], name=op.f(f"fk_{table}_run_id_runs"))


def _at(name: str, *, nullable: bool = False) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    """Create every table."""
    op.create_table(
        "nodes",
        sa.Column("node_id", sa.String(length=128), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("url", sa.String(length=512), nullable=True),
        sa.Column("capacity", sa.Integer(), nullable=True),
        sa.Column("token_hash", sa.String(length=128), nullable=False),
        _at("joined_at"),
        sa.Column("resources", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("node_id", name=op.f("pk_nodes")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_nodes_token_hash")),
    )
    op.create_table(
        "runs",
        sa.Column("run_id", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("cloud_rounds", sa.Integer(), nullable=False),
        sa.Column("current_round", sa.Integer(), nullable=False),
        _at("created_at"),
        _at("updated_at"),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_runs")),
    )
    op.create_table(
        "adapter_versions",
        sa.Column("run_id", sa.String(length=128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("path", sa.String(length=1024), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("nbytes", sa.BigInteger(), nullable=False),
        _at("created_at"),
        _run_fk("adapter_versions"),
        sa.PrimaryKeyConstraint("run_id", "version", name=op.f("pk_adapter_versions")),
    )
    op.create_table(
        "byte_counts",
        sa.Column("run_id", sa.String(length=128), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("node_id", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("nbytes", sa.BigInteger(), nullable=False),
        _at("at"),
        _run_fk("byte_counts"),
        sa.PrimaryKeyConstraint("run_id", "round", "node_id", "kind", name=op.f("pk_byte_counts")),
    )
    op.create_table(
        "metrics",
        sa.Column("run_id", sa.String(length=128), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("node_id", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("value", sa.Double(), nullable=False),
        _at("at"),
        _run_fk("metrics"),
        sa.PrimaryKeyConstraint("run_id", "round", "node_id", "name", name=op.f("pk_metrics")),
    )
    op.create_table(
        "participation",
        sa.Column("run_id", sa.String(length=128), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("node_id", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        _at("at"),
        _run_fk("participation"),
        sa.PrimaryKeyConstraint("run_id", "round", "node_id", "status", name=op.f("pk_participation")),
    )
    op.create_table(
        "rounds",
        sa.Column("run_id", sa.String(length=128), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        _at("started_at"),
        _at("updated_at"),
        _at("finished_at", nullable=True),
        _run_fk("rounds"),
        sa.PrimaryKeyConstraint("run_id", "round", name=op.f("pk_rounds")),
    )
    op.create_table(
        "snapshots",
        sa.Column("run_id", sa.String(length=128), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        _at("at"),
        _run_fk("snapshots"),
        sa.PrimaryKeyConstraint("run_id", "round", "kind", name=op.f("pk_snapshots")),
    )


def downgrade() -> None:
    """Drop every table."""
    for table in (
        "snapshots",
        "rounds",
        "participation",
        "metrics",
        "byte_counts",
        "adapter_versions",
        "runs",
        "nodes",
    ):
        op.drop_table(table)
