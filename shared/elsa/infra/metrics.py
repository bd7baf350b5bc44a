"""Prometheus metrics of a service: one registry per app (several apps may share a process in
tests), HTTP request counts and latencies by route template, errors by code, and a ``/metrics``
endpoint that refreshes state-derived gauges before each scrape.

Services declare their own domain metrics on ``ServiceMetrics.registry`` (see each service's
``metrics.py``); this module knows nothing about rounds or sessions.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from elsa.errors import AuthError
from elsa.infra.web import bearer_token, same_secret

#: latency buckets (seconds) for HTTP requests and split steps: 1 ms .. 2 min
LATENCY_BUCKETS_S = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    120.0,
)
#: round durations (seconds): 1 s .. 2 h
ROUND_BUCKETS_S = (1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0)

Refresher = Callable[[], Awaitable[None]]
ASGIApp = Callable[
    [dict[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]
]


class ServiceMetrics:
    """The registry of one app and the metrics every ELSA service exports."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = self.counter(
            "elsa_http_requests", "HTTP requests answered", ("method", "route", "status")
        )
        self.request_seconds = self.histogram(
            "elsa_http_request_duration_seconds", "time to answer an HTTP request", ("method", "route")
        )
        self.errors = self.counter(
            "elsa_errors", "requests answered with an error, by error code (4xx and 5xx)", ("code",)
        )
        self.info = self.gauge("elsa_service_info", "always 1; labels name the service", ("service",))
        self.info.labels(service).set(1)
        self._refreshers: list[Refresher] = []

    def counter(self, name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
        """A counter on this registry (exported as ``<name>_total``)."""
        return Counter(name, doc, list(labels), registry=self.registry)

    def gauge(self, name: str, doc: str, labels: Sequence[str] = ()) -> Gauge:
        """A gauge on this registry."""
        return Gauge(name, doc, list(labels), registry=self.registry)

    def histogram(
        self, name: str, doc: str, labels: Sequence[str] = (), buckets: Sequence[float] = LATENCY_BUCKETS_S
    ) -> Histogram:
        """A histogram on this registry."""
        return Histogram(name, doc, list(labels), registry=self.registry, buckets=list(buckets))

    def on_scrape(self, refresher: Refresher) -> None:
        """Run ``refresher`` before each scrape (gauges read from the service's state)."""
        self._refreshers.append(refresher)

    async def render(self) -> bytes:
        """The exposition text, after refreshing state-derived gauges."""
        for refresh in self._refreshers:
            await refresh()
        return bytes(generate_latest(self.registry))


def _route_template(scope: dict[str, Any]) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"  # unknown paths share one label


class _RequestMetrics:
    """ASGI middleware: count and time every HTTP request by method, route template and status."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(
        self,
        scope: dict[str, Any],
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[Any], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = _route_template(scope)
            method = str(scope.get("method", ""))
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.request_seconds.labels(method, route).observe(time.perf_counter() - start)
            if status >= 400:
                code = scope.get("state", {}).get("error_code") or f"http_{status}"
                self.metrics.errors.labels(str(code)).inc()


def install_metrics(app: FastAPI, metrics: ServiceMetrics, token: str | None = None) -> None:
    """Add the request middleware and ``GET /metrics`` (Prometheus text format) to ``app``.

    With ``token`` set, scrapes must present it as a bearer token (constant-time comparison);
    without it the endpoint is open, like ``/health`` (keep it on the cluster network).
    """
    app.state.metrics = metrics
    app.add_middleware(_RequestMetrics, metrics=metrics)  # type: ignore[arg-type]

    @app.get(
        "/metrics",
        tags=["health"],
        summary="Prometheus metrics",
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {}}}},
    )
    async def prometheus_metrics(request: Request) -> Response:
        if token is not None and not same_secret(bearer_token(request), token):
            raise AuthError("invalid metrics token")
        return Response(content=await metrics.render(), media_type=CONTENT_TYPE_LATEST)
