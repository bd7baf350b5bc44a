"""FastAPI plumbing shared by the three services: one error mapping, bodies with size limits,
bearer tokens, msgpack responses and long-poll waiting."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from elsa.errors import AuthError, ElsaError, PayloadTooLargeError

logger = logging.getLogger(__name__)

MSGPACK = "application/msgpack"
FRAMES = "application/x-elsa-frames"

#: the documented error body of every non-2xx answer
ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    code: {
        "description": text,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {"error": {"type": "string"}, "detail": {"type": "string"}},
                }
            }
        },
    }
    for code, text in (
        (400, "malformed input"),
        (401, "missing or invalid credentials"),
        (403, "not allowed"),
        (404, "unknown node, run, round or session"),
        (409, "conflicts with the current state"),
        (413, "payload too large"),
        (422, "invalid input"),
        (503, "a dependency is unavailable; retry"),
    )
}


def install_error_handlers(app: FastAPI) -> None:
    """Map ElsaError -> its HTTP status with ``{"error", "detail"}``; validation -> 422; routing
    errors (unknown path 404, wrong method 405) -> the same body; else 500."""

    async def on_elsa_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ElsaError)
        request.state.error_code = exc.code  # for the request metrics
        if exc.http_status >= 500:
            logger.warning("request failed", extra={"path": request.url.path, "error": exc.code})
        return JSONResponse(exc.to_dict(), status_code=exc.http_status)

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}" for e in exc.errors()
        )
        request.state.error_code = "invalid_request"
        return JSONResponse({"error": "invalid_request", "detail": problems[:2000]}, status_code=422)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code < 400:  # e.g. 304: no body
            return Response(status_code=exc.status_code, headers=exc.headers)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        request.state.error_code = code
        return JSONResponse(
            {"error": code, "detail": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers
        )

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error", extra={"path": request.url.path})
        request.state.error_code = "internal"
        return JSONResponse({"error": "internal", "detail": "internal error"}, status_code=500)

    async def on_disconnect(request: Request, exc: Exception) -> Response:
        # the caller went away mid-request (a killed device, say): nobody reads the answer
        logger.info("client disconnected", extra={"path": request.url.path})
        request.state.error_code = "client_disconnected"
        return JSONResponse(
            {"error": "client_disconnected", "detail": "the client went away"}, status_code=400
        )

    app.add_exception_handler(ClientDisconnect, on_disconnect)
    app.add_exception_handler(ElsaError, on_elsa_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The request body, refused with PayloadTooLargeError past ``max_bytes`` (streamed check)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLargeError(f"body of {declared} bytes exceeds the limit of {max_bytes}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLargeError(f"body exceeds the limit of {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def bearer_token(request: Request) -> str:
    """The bearer token of a request (AuthError if absent or malformed)."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("missing bearer token")
    return token.strip()


#: the shipped placeholder secrets: a service started with one of them warns at startup
PLACEHOLDER_SECRETS = frozenset({"change-me", "change-me-admin"})


def warn_placeholder_secrets(service: str, **secrets_by_name: str | None) -> list[str]:
    """Log a warning naming each setting still at its shipped placeholder; returns the names."""
    names = [name for name, value in secrets_by_name.items() if value in PLACEHOLDER_SECRETS]
    if names:
        logger.warning(
            "placeholder secrets in use: set them before exposing this service",
            extra={"service_tier": service, "settings": ",".join(sorted(names))},
        )
    return names


#: addresses ``require_local_or_token`` treats as the same machine
LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


def require_local_or_token(request: Request, token: str | None) -> None:
    """Gate of a node's own status endpoints: with ``token`` set, that bearer token
    (constant-time); without one, loopback callers only (AuthError otherwise)."""
    if token is None:
        host = request.client.host if request.client else ""
        if host not in LOOPBACK:
            raise AuthError("status is served to loopback callers only unless a status token is set")
        return
    if not same_secret(bearer_token(request), token):
        raise AuthError("invalid status token")


def new_token() -> str:
    """A fresh random bearer token (256 bits)."""
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """How tokens are stored: hex sha256 (tokens are random, so no salt is needed)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def same_secret(given: str, expected: str) -> bool:
    """Constant-time comparison of secrets."""
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def msgpack_response(data: bytes) -> Response:
    """A msgpack body."""
    return Response(content=data, media_type=MSGPACK)


async def wait_until(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.05) -> bool:
    """Poll ``predicate`` until true or ``timeout_s`` passes; returns its last value."""
    deadline = time.monotonic() + max(timeout_s, 0.0)
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(interval_s)
    return True


def worker_lifespan(
    target: Callable[[], None],
    stop: threading.Event,
    *,
    name: str,
    autostart: bool,
    on_exit: Callable[[], None],
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """An app lifespan that runs ``target`` in a daemon thread (when ``autostart``), then sets
    ``stop``, joins the thread (5 s at most) and calls ``on_exit`` on shutdown."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        thread: threading.Thread | None = None
        if autostart:
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
        try:
            yield
        finally:
            stop.set()
            if thread is not None:
                thread.join(timeout=5)
            on_exit()

    return lifespan
