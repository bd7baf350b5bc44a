"""API tests: each app in-process (httpx ASGITransport + lifespan), every bad-input case.

A package, so that this folder's ``conftest`` does not shadow ``tests/conftest.py`` for
``from conftest import ...`` in other folders.
"""
