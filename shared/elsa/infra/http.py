"""HTTP peer clients: the service runtime's implementation of the transport ports.

* :class:`CloudClient` — devices and edges talking to the cloud (join, tasks, adapters, reports).
* :class:`EdgeClient` — a device talking to its edge (ping, sessions, updates, edge models).
* :class:`HttpCutLink` — a :class:`~elsa.model.training.CutLink` over the edge's streaming
  endpoints: each forward/backward is one POST whose body and response are length-prefixed
  msgpack frames (large tensors travel as raw buffers after a small header).

Synchronous (httpx) on purpose: device and edge workers run torch in threads. Connection
failures retry with backoff and end as :class:`~elsa.errors.UnavailableError`; a peer's typed
error answer is rebuilt as the same :class:`~elsa.errors.ElsaError` subclass.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
import torch

from elsa.errors import DecodeError, ElsaError, NotFoundError, UnavailableError, error_from_code
from elsa.model.adapters import AdapterState
from elsa.params import TransportParams
from elsa.wire import (
    AdapterBroadcast,
    AdapterUpdate,
    BackwardRequest,
    BackwardResponse,
    ForwardRequest,
    ForwardResponse,
    FrameDecoder,
    Message,
    ProbeReport,
    decode,
    encode,
    encode_frames,
    from_payload,
    payloads_to_state,
    to_payload,
)
from elsa.wire.control import (
    JoinRequest,
    JoinResponse,
    MetricsReport,
    NodeIdentity,
    ResourceReport,
    Task,
)

M = TypeVar("M", bound=Message)
MSGPACK = "application/msgpack"
FRAMES = "application/x-elsa-frames"


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        body = response.json()
        code, detail = str(body.get("error", "http_error")), str(body.get("detail", response.text[:200]))
    except ValueError:
        code, detail = "http_error", response.text[:200]
    raise error_from_code(code, detail, response.status_code)


@dataclass
class _Peer:
    """A base URL, a pooled client, a bearer token and retry policy. ``ca_file``: the CA bundle
    that verifies an https peer (None = the system's trust store)."""

    base_url: str
    token: str | None = None
    timeout_s: float = 60.0
    retries: int = 3
    backoff_s: float = 0.5
    ca_file: str | None = None
    client: httpx.Client = field(init=False, repr=False)

    def __post_init__(self) -> None:
        verify: ssl.SSLContext | bool = True
        if self.ca_file is not None:
            verify = ssl.create_default_context(cafile=self.ca_file)
        self.client = httpx.Client(base_url=self.base_url.rstrip("/"), timeout=self.timeout_s, verify=verify)

    def close(self) -> None:
        """Close pooled connections."""
        self.client.close()

    def headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        out = {"authorization": f"Bearer {self.token}"} if self.token else {}
        out.update(extra or {})
        return out

    def request(
        self, method: str, path: str, *, timeout_s: float | None = None, **kwargs: Any
    ) -> httpx.Response:
        """Send with retries on connection errors; typed errors for error answers."""
        last: Exception | None = None
        for attempt in range(self.retries):
            try:
                response = self.client.request(
                    method,
                    path,
                    headers=self.headers(kwargs.pop("headers", None)),
                    timeout=timeout_s or self.timeout_s,
                    **kwargs,
                )
            except httpx.TimeoutException as exc:
                raise UnavailableError(f"{method} {self.base_url}{path} timed out") from exc
            except httpx.TransportError as exc:  # connect, read, write, protocol: the peer went away
                last = exc
                time.sleep(self.backoff_s * (2**attempt))
                continue
            _raise_for(response)
            return response
        raise UnavailableError(f"{method} {self.base_url}{path}: {last}")


def _decode_state(data: bytes) -> AdapterState:
    return payloads_to_state(decode(data, AdapterBroadcast).tensors)


class CloudClient(_Peer):
    """A node's client of the cloud coordinator."""

    def join(self, request: JoinRequest) -> JoinResponse:
        """Register; stores the returned bearer token on this client."""
        response = self.request("POST", "/v1/nodes/join", json=request.model_dump(mode="json"))
        joined = JoinResponse.model_validate(response.json())
        self.token = joined.token
        return joined

    def join_until_accepted(
        self, request: JoinRequest, stop: threading.Event, retry_s: float = 1.0
    ) -> JoinResponse | None:
        """Join, retrying while the cloud is unreachable; None if ``stop`` is set first.

        A refusal (wrong secret, bad request) is raised, not retried.
        """
        while not stop.is_set():
            try:
                return self.join(request)
            except UnavailableError:
                stop.wait(retry_s)
        return None

    def heartbeat_until(self, stop: threading.Event, interval_s: float) -> None:
        """Send a liveness signal every ``interval_s`` until ``stop`` is set (a thread target)."""
        while not stop.wait(interval_s):
            if self.token is None:
                continue
            try:
                self.heartbeat()
            except ElsaError:
                continue

    def report_resources(self, report: ResourceReport) -> None:
        """Send memory budget, per-block compute time and link probes."""
        self.request("POST", "/v1/nodes/me/resources", json=report.model_dump(mode="json"))

    def edges(self) -> list[dict[str, Any]]:
        """The registered edges (id, name, url) a device should probe."""
        data: list[dict[str, Any]] = self.request("GET", "/v1/edges").json()
        return data

    def next_task(self, after: int, wait_s: float) -> tuple[int, Task]:
        """Long-poll the next task newer than sequence number ``after``."""
        response = self.request(
            "GET", "/v1/tasks/next", params={"after": after, "wait_s": wait_s}, timeout_s=wait_s + 30
        )
        return int(response.headers.get("x-elsa-task-seq", "0")), Task.model_validate(response.json())

    def global_adapter(self, run_id: str, version: int, keys: list[str] | None = None) -> AdapterState:
        """Download a global adapter version (optionally only some keys)."""
        return self.global_adapter_sized(run_id, version, keys)[0]

    def global_adapter_sized(
        self, run_id: str, version: int, keys: list[str] | None = None
    ) -> tuple[AdapterState, int]:
        """A global adapter version (full values) and the bytes it took."""
        params = {"keys": ",".join(keys)} if keys else None
        response = self.request("GET", f"/v1/runs/{run_id}/adapters/{version}", params=params)
        return _decode_state(response.content), len(response.content)

    def global_delta(self, run_id: str, version: int) -> tuple[AdapterBroadcast, int]:
        """The merged sketch that made ``version`` from ``version - 1`` and the bytes it took
        (NotFoundError when the cloud no longer has it: fetch the full version instead)."""
        response = self.request("GET", f"/v1/runs/{run_id}/adapters/{version}/delta")
        return decode(response.content, AdapterBroadcast), len(response.content)

    def upload_edge_model(self, run_id: str, round_index: int, update: AdapterUpdate) -> int:
        """An edge's aggregated model for a cloud round; returns bytes sent."""
        return self._post_message(f"/v1/runs/{run_id}/rounds/{round_index}/edge-models", update)

    def upload_probes(self, report: ProbeReport) -> int:
        """A device's probe report (predictions, fingerprint) for a cloud round; returns bytes sent."""
        return self._post_message(f"/v1/runs/{report.run_id}/rounds/{report.round}/probes", report)

    def _post_message(self, path: str, message: Message) -> int:
        body = encode(message)
        self.request("POST", path, content=body, headers={"content-type": MSGPACK})
        return len(body)

    def report(self, report: MetricsReport) -> None:
        """A device's per-round metrics and byte counts."""
        self.request(
            "POST",
            f"/v1/runs/{report.run_id}/rounds/{report.round}/reports",
            json=report.model_dump(mode="json"),
        )

    def heartbeat(self) -> None:
        """Liveness signal."""
        self.request("POST", "/v1/nodes/me/heartbeat")

    def introspect(self, token: str) -> NodeIdentity | None:
        """Who holds ``token`` (an edge asking; None when no node does)."""
        try:
            response = self.request("POST", "/v1/nodes/introspect", json={"token": token})
        except NotFoundError:
            return None
        return NodeIdentity.model_validate(response.json())


@dataclass
class EdgeClient(_Peer):
    """A device's client of its edge (session-token authenticated)."""

    counts: Counter[str] = field(default_factory=Counter)

    def ping(self, payload_bytes: int) -> tuple[float, float]:
        """(RTT of an empty ping in s, throughput in bytes/s of a ``payload_bytes`` upload).

        A first, unmeasured ping authenticates (the edge asks the cloud about a new token once)
        and opens the connection."""
        self.request("GET", "/v1/ping")
        t0 = time.perf_counter()
        self.request("GET", "/v1/ping")
        rtt = time.perf_counter() - t0
        payload = bytes(payload_bytes)
        t1 = time.perf_counter()
        self.request(
            "POST", "/v1/ping", content=payload, headers={"content-type": "application/octet-stream"}
        )
        elapsed = max(time.perf_counter() - t1 - rtt, 1e-6)
        return rtt, payload_bytes / elapsed

    def open_session(self, run_id: str, round_index: int, device_id: str, session_token: str) -> str:
        """Open this device's split session for a round; returns the session id."""
        self.token = session_token
        response = self.request(
            "POST", "/v1/sessions", json={"run_id": run_id, "round": round_index, "device_id": device_id}
        )
        return str(response.json()["session_id"])

    def exchange(self, path: str, message: Message, expected: type[M], kind: str) -> M:
        """POST a message as frames; decode the framed answer. Counts bytes both ways."""
        frames = encode_frames(message)
        sent = sum(len(f) for f in frames)

        def body() -> Iterator[bytes]:
            for frame in frames:
                yield bytes(frame)

        response = self.request("POST", path, content=body(), headers={"content-type": FRAMES})
        self.counts[kind] += sent + len(response.content)
        decoder = FrameDecoder(expected=expected)
        got = decoder.feed(response.content)
        decoder.finish()
        if len(got) != 1 or not isinstance(got[0], expected):
            raise DecodeError(f"expected one {expected.kind} frame message from the edge, got {len(got)}")
        return got[0]

    def submit(self, session_id: str, edge_round: int, update: AdapterUpdate) -> None:
        """Upload the device's head/tail after an edge round."""
        body = encode(update)
        self.counts["adapters_device_to_edge"] += len(body)
        self.request(
            "POST",
            f"/v1/sessions/{session_id}/updates",
            params={"edge_round": edge_round},
            content=body,
            headers={"content-type": MSGPACK},
        )

    def edge_model(
        self, session_id: str, edge_round: int, wait_s: float, deadline_s: float
    ) -> AdapterBroadcast:
        """Long-poll the aggregated model of an edge round (device keys: merged sketches on the
        round's start model, or full values)."""
        give_up = time.monotonic() + deadline_s
        while True:
            response = self.request(
                "GET",
                f"/v1/sessions/{session_id}/model",
                params={"edge_round": edge_round, "wait_s": wait_s},
                timeout_s=wait_s + 30,
            )
            if response.status_code == 200:
                self.counts["adapters_edge_to_device"] += len(response.content)
                return decode(response.content, AdapterBroadcast)
            if time.monotonic() > give_up:
                raise UnavailableError(
                    f"edge model for edge round {edge_round} not ready in {deadline_s:.0f}s"
                )


@dataclass
class HttpCutLink:
    """:class:`~elsa.model.training.CutLink` over the edge's frame endpoints."""

    edge: EdgeClient
    session_id: str
    transport: TransportParams

    def forward(self, step: int, activations: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Lower-cut activations out, upper-cut activations back (wire dtype both ways)."""
        request = ForwardRequest(
            session_id=self.session_id,
            step=max(step, 0),
            activations=to_payload(activations, self.transport.dtype),
            attention_mask=to_payload(attention_mask.to(torch.uint8)),
        )
        path = f"/v1/sessions/{self.session_id}/forward" + ("?inference=1" if step < 0 else "")
        kind = "inference_activations" if step < 0 else "activations"
        got = self.edge.exchange(path, request, ForwardResponse, kind)
        return from_payload(got.activations, dtype=torch.float32)

    def backward(self, step: int, grad: torch.Tensor) -> torch.Tensor:
        """Upper-cut gradient out, lower-cut gradient back."""
        request = BackwardRequest(
            session_id=self.session_id, step=step, grad=to_payload(grad, self.transport.dtype)
        )
        got = self.edge.exchange(
            f"/v1/sessions/{self.session_id}/backward", request, BackwardResponse, "gradients"
        )
        return from_payload(got.grad, dtype=torch.float32)


__all__ = ["CloudClient", "EdgeClient", "ElsaError", "HttpCutLink"]
