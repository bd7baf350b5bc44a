"""Alembic migrations of ELSA's SQL schema (``env.py`` + ``versions/``; see :mod:`elsa.infra.migrate`)."""
