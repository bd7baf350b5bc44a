"""``elsa submit``: create a run on a deployed cloud and follow it to its end (compose, k8s).

The operator side of a deployment (DESIGN §6, service runtime): where ``elsa demo`` starts its
own services, ``submit`` talks to a cloud that runs elsewhere and may still be starting, or
restart while the run goes on (the cloud resumes a run at its last committed round). So every
request is retried while the cloud is unreachable or answers 429/502/503/504, for at most
``timeout_s`` in a row; what the cloud *rejects* (admin token, config, unknown run) raises at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from elsa.errors import AuthError, ConfigError, ElsaError, NotFoundError, UnavailableError
from elsa.runtime.config import RunConfig
from elsa.wire.control import RoundView, RunView

CLOUD_URL_ENV = "ELSA_CLOUD_URL"
"""Environment variable of ``elsa submit --cloud-url`` (not a cloud setting: the operator's side)."""

ADMIN_TOKEN_ENV = "ELSA_ADMIN_TOKEN"
"""Environment variable of ``elsa submit --admin-token`` (the cloud's ``ELSA_CLOUD_ADMIN_TOKEN``)."""

FINAL_RUN_STATES = frozenset({"completed", "failed", "stopped"})
"""A run in one of these states will not change any more."""

ACTIVE_RUN_STATES = frozenset({"created", "running", "paused"})
"""A run in one of these states still holds the deployment's devices."""

_FINISHED_ROUND_STATES = frozenset({"completed", "abandoned"})
_RETRIED_STATUS = frozenset({429, 502, 503, 504})
#: transport errors raised before a request was sent: a retry cannot repeat its effect
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)

_Model = TypeVar("_Model", bound=BaseModel)


@dataclass(frozen=True)
class FinishedRound:
    """One finished cloud round as ``elsa submit --wait`` reports it."""

    round: int
    cloud_rounds: int
    state: str
    participants: int
    version: int | None
    metrics: Mapping[str, float] = field(default_factory=dict)
    bytes_moved: int = 0

    def describe(self) -> str:
        """One line: round, state, the devices' mean train loss and local accuracy, bytes, version."""
        parts = [f"round {self.round}/{self.cloud_rounds} {self.state}"]
        if "train_loss" in self.metrics:
            parts.append(f"train loss {self.metrics['train_loss']:.3f}")
        if "eval_accuracy" in self.metrics:
            parts.append(f"accuracy {self.metrics['eval_accuracy']:.3f}")
        parts.append(f"{self.participants} participants")
        parts.append(f"{self.bytes_moved / 1e6:.1f} MB moved")
        if self.version is not None:
            parts.append(f"adapter v{self.version}")
        return " · ".join(parts)


class CloudOperator:
    """The operator's client of a deployed cloud's API, patient with a cloud that (re)starts.

    ``client`` carries the base URL (and, in tests, a transport); the admin token is added to
    every request. ``sleep`` and ``clock`` are injectable so tests need not wait.
    """

    def __init__(
        self,
        client: httpx.Client,
        admin_token: str,
        *,
        timeout_s: float = 300.0,
        retry_s: float = 2.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if timeout_s < 0 or retry_s < 0:
            raise ConfigError("timeout_s and retry_s must be >= 0")
        self.client = client
        self.timeout_s = timeout_s
        self.retry_s = retry_s
        self._headers = {"authorization": f"Bearer {admin_token}"}
        self._sleep = sleep
        self._clock = clock

    def _request(self, method: str, path: str, json: Any = None, *, auth: bool = True) -> Any:
        """One JSON request, retried while the cloud is unreachable, rate-limits or is unavailable.

        A GET is retried after any transport error; another method only when the request was
        never sent (a POST that may have reached the cloud is not repeated).
        """
        deadline = self._clock() + self.timeout_s
        while True:
            try:
                response = self.client.request(
                    method, path, json=json, headers=self._headers if auth else None
                )
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}"
                if method != "GET" and not isinstance(exc, _NOT_SENT):
                    raise UnavailableError(
                        f"{method} {path}: connection lost after sending ({problem}); "
                        "GET /v1/runs shows whether it took effect"
                    ) from exc
            else:
                if response.status_code not in _RETRIED_STATUS:
                    return _json_or_raise(method, path, response)
                problem = f"HTTP {response.status_code} {_detail(response)}"
            if self._clock() >= deadline:
                raise UnavailableError(
                    f"cloud at {self.client.base_url} unreachable for {self.timeout_s:.0f}s "
                    f"({method} {path}: {problem})"
                )
            self._sleep(self.retry_s)

    def wait_ready(self) -> None:
        """Return once the cloud's ``/ready`` answers 200 (SQL and Redis up)."""
        self._request("GET", "/ready", auth=False)

    def create_run(self, config: RunConfig) -> RunView:
        """``POST /v1/runs``: AuthError for a bad token, ConfigError naming what the cloud rejected."""
        data = self._request("POST", "/v1/runs", {"config": config.model_dump(mode="json")})
        return _parse(RunView, data, "POST /v1/runs")

    def run(self, run_id: str) -> RunView:
        """``GET /v1/runs/{run_id}``; NotFoundError for an unknown run."""
        return _parse(RunView, self._request("GET", f"/v1/runs/{run_id}"), f"GET /v1/runs/{run_id}")

    def runs(self) -> list[RunView]:
        """``GET /v1/runs``: every run, newest last."""
        return [_parse(RunView, item, "GET /v1/runs") for item in self._request("GET", "/v1/runs")]

    def rounds(self, run_id: str) -> list[RoundView]:
        """``GET /v1/runs/{run_id}/rounds``."""
        path = f"/v1/runs/{run_id}/rounds"
        return [_parse(RoundView, item, path) for item in self._request("GET", path)]

    def round_metrics(self, run_id: str) -> dict[int, dict[str, Any]]:
        """``GET /v1/runs/{run_id}/metrics`` keyed by round: reports, metric means, bytes by kind."""
        data = self._request("GET", f"/v1/runs/{run_id}/metrics")
        return {int(r["round"]): r for r in data.get("rounds", [])}

    def active_run(self, name: str) -> RunView | None:
        """The newest run of this config name that is still active (created, running, paused)."""
        active = [r for r in self.runs() if r.name == name and r.state in ACTIVE_RUN_STATES]
        return active[-1] if active else None

    def follow(
        self,
        run_id: str,
        on_round: Callable[[FinishedRound], None],
        *,
        expected_reports: int,
        poll_s: float = 2.0,
    ) -> RunView:
        """Poll a run until it is completed, failed or stopped; returns its final view.

        Each finished round (completed or abandoned) is passed to ``on_round`` exactly once, in
        order, as soon as ``expected_reports`` devices have reported its metrics, a later round
        has finished, or the run has ended (device reports may trail the round by a moment).
        """
        reported: set[int] = set()
        while True:
            view = self.run(run_id)
            final = view.state in FINAL_RUN_STATES
            finished = [r for r in self.rounds(run_id) if r.state in _FINISHED_ROUND_STATES]
            metrics = self.round_metrics(run_id) if finished else {}
            last_finished = max((r.round for r in finished), default=0)
            for r in sorted(finished, key=lambda r: r.round):
                if r.round in reported:
                    continue
                row = metrics.get(r.round, {})
                if not (final or r.round < last_finished or int(row.get("reports", 0)) >= expected_reports):
                    break
                reported.add(r.round)
                on_round(
                    FinishedRound(
                        round=r.round,
                        cloud_rounds=view.cloud_rounds,
                        state=r.state,
                        participants=r.participants,
                        version=r.version,
                        metrics={k: float(v) for k, v in row.get("metrics", {}).items()},
                        bytes_moved=int(sum(row.get("bytes", {}).values())),
                    )
                )
            if final:
                return view
            self._sleep(poll_s)


def submit_run(operator: CloudOperator, config: RunConfig, *, attach: bool = False) -> tuple[RunView, bool]:
    """Wait for the cloud to be ready and create a run of ``config``; returns it and whether it
    already existed.

    With ``attach``, an active run of the same config name (e.g. one a restarted cloud resumed)
    is returned instead of creating a second run that would compete for the same devices.
    """
    config.check_service_runtime()
    operator.wait_ready()
    if attach:
        existing = operator.active_run(config.name)
        if existing is not None:
            return existing, True
    return operator.create_run(config), False


def _detail(response: httpx.Response) -> str:
    """The ``detail`` of an ELSA error body, else the start of the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])[:1000]
    return response.text[:300]


def _json_or_raise(method: str, path: str, response: httpx.Response) -> Any:
    """The response's JSON, or the ElsaError that says what the cloud rejected."""
    status = response.status_code
    if status < 400:
        try:
            return response.json()
        except ValueError as exc:
            raise UnavailableError(f"{method} {path}: not JSON (is this an ELSA cloud?)") from exc
    detail = _detail(response)
    error: ElsaError
    if status in (401, 403):
        error = AuthError(f"the cloud rejected the admin token ({status}): {detail}")
    elif status == 404:
        error = NotFoundError(f"{method} {path}: {detail}")
    elif status in (400, 409, 422):
        error = ConfigError(f"the cloud rejected {method} {path} ({status}): {detail}")
    else:
        error = UnavailableError(f"{method} {path}: HTTP {status} {detail}")
    raise error


def _parse(model: type[_Model], data: Any, source: str) -> _Model:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise UnavailableError(f"{source}: unexpected answer from the cloud: {exc}") from exc
