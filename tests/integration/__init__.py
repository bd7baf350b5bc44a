"""Integration tests against real Redis and PostgreSQL (a package, so its conftest does not shadow tests/conftest.py)."""
