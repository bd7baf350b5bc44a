"""The cloud's durable store over SQLAlchemy 2 async (DESIGN §5).

Public entry point: :class:`SqlStore` (see :mod:`elsa.infra.sql.store`). The schema lives in
:mod:`elsa.infra.sql.models`; records returned by the store in :mod:`elsa.infra.records`.
"""

from __future__ import annotations

from elsa.infra.sql.runs import ROUND_TRANSITIONS
from elsa.infra.sql.store import SqlStore

__all__ = ["ROUND_TRANSITIONS", "SqlStore"]
