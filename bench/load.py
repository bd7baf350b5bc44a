"""Load on loopback: one edge under N concurrent split sessions, the cloud under M polling devices.

Two scenarios (``--scenario edge|cloud|all``, default all), each against real service processes
on 127.0.0.1 (``elsa.runtime.launcher``: embedded Redis, SQLite) and each bounded by
``--max-requests`` (counted before a request is sent) and ``--max-seconds`` (no request starts
later; long polls are shortened to end by then). Service start-up is not part of the bound.

* **edge** — a real cloud and one real edge process (``scale_sessions.edge_round``): N devices
  join and the cloud's run puts all of them on the edge. For each device this process first
  computes the cut tensors of one real split step in-process (packaged all-MiniLM-L6-v2, cut
  h1/t1: the head's output for its batch of 8 x 32 random tokens and the tail's gradient at the
  upper cut), then N threads start together: each opens its split session and runs K steps, a
  forward then a backward exchange each through ``HttpCutLink`` (the device agent's link, fp16
  on the wire), replaying its tensors with nothing computed in between, so the edge gets
  requests as fast as it answers them. The edge does real work: the body forward, its backward
  and the body LoRA optimizer step.
* **cloud** — a real cloud process: M devices join (``POST /v1/nodes/join``, all at once), then
  each long-polls ``GET /v1/tasks/next`` in a loop and heartbeats (``POST /v1/nodes/me/heartbeat``)
  every ``--heartbeat-s``; one asyncio loop, one HTTP client per node (one client shared by
  hundreds of nodes queued requests for seconds in httpx's connection pool). Unless ``--no-run``, a stand-in edge
  node joins too (it polls and heartbeats like the devices; nothing listens at its URL and no
  device contacts it) and ``--run-at-s`` into the polling the operator creates a run of M
  devices on it, so the cloud plans a round and hands every device its ``train`` task; the time
  from the run's creation to each device's receipt is reported.

Every request is timed and its outcome kept, without retries: an error is any non-2xx answer or
a request that got no answer (timeout, connection error). An idle long poll's latency is the
time beyond the wait it asked for. Around each load the script also reads, without counting
them as load: every process's CPU time and RSS, the service's own Prometheus histograms (time
per route; the edge's body compute and compute-lock wait), how late this process's event loop
ran (cloud) and a separate process's ``GET /health`` latency, which tell a slow service from a
slow load generator. Prints one table, writes the JSON (machine, parameters,
per-kind summaries, raw latencies and a ``report`` that ``elsa report`` renders) and exits with
status 1 when any request errored.

``--env KIND:NAME=VALUE`` (repeatable; KIND cloud or edge) adds an environment variable to the
started processes, e.g. ``--env cloud:ELSA_CLOUD_RATE_LIMIT_PER_S=0`` to lift the cloud's rate
limit.

Usage: ``python bench/load.py [--quick] [--scenario all|edge|cloud] [--threads T] [--out PATH]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import math
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psutil
import torch

from benchkit import (
    RESULTS_DIR,
    latency_summary_ms,
    machine_info,
    print_table,
    quiet_transformers,
    set_torch_threads,
    write_results,
)
from elsa.infra.http import EdgeClient, HttpCutLink
from elsa.model.split import SplitModel
from elsa.model.training import Batch, DeviceStepper, EdgeStepper
from elsa.params import TransportParams
from elsa.runtime.config import RunConfig, parse_config
from elsa.runtime.launcher import (
    Cluster,
    Operator,
    free_port,
    plan_demo,
    running_cluster,
    start_services,
    wait_healthy,
)
from elsa.runtime.study_report import format_cell
from elsa.runtime.transport import LocalCutLink
from elsa.wire.control import Task
from scale_sessions import BATCH, SEQ, client_batches, edge_round, sessions_config

NAME = "load"
LOOPBACK = "http://127.0.0.1:"
#: distinct error messages kept per scenario in the JSON
ERROR_MESSAGES_KEPT = 20
#: a long poll shorter than this is not started (the scenario's time is up)
MIN_POLL_WAIT_S = 0.05
#: after a failed poll a node waits this long before the next (no hot loop on 429 / 5xx)
ERROR_PAUSE_S = 1.0
#: the cloud client drops idle connections after this (uvicorn closes them after 5 s)
KEEPALIVE_S = 3.0
EDGE_KINDS = ("open session", "forward", "backward")
CLOUD_KINDS = ("join", "heartbeat", "poll → idle", "poll → task", "poll → failed", "create run")
COLUMNS = [
    "scenario",
    "request",
    "clients",
    "requests",
    "errors",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "max ms",
    "requests/s",
]

T = TypeVar("T")


@dataclass(frozen=True)
class Sample:
    """One request: what, when (s since the scenario's start), how long, its answer's status
    (None: no answer) and why it failed (None: a 2xx answer). ``wait_s`` is the long-poll wait
    it asked for (0 for other requests); its reported latency is ``latency_s - wait_s``."""

    kind: str
    start_s: float
    latency_s: float
    status: int | None
    error: str | None
    wait_s: float = 0.0

    @property
    def failed(self) -> bool:
        return self.error is not None


@dataclass
class Budget:
    """At most ``max_requests`` requests, none started at or after ``deadline`` (perf_counter
    seconds). Thread-safe."""

    max_requests: int
    deadline: float = math.inf
    sent: int = 0
    #: a request was refused because the count was spent
    exhausted: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def take(self) -> bool:
        """True (and one request counted) if a request may start now."""
        with self.lock:
            if time.perf_counter() >= self.deadline:
                return False
            if self.sent >= self.max_requests:
                self.exhausted = True
                return False
            self.sent += 1
            return True

    def stopped_by(self) -> str:
        """What ended the scenario: ``max_requests``, ``max_seconds`` or ``done``."""
        if self.exhausted:
            return "max_requests"
        return "max_seconds" if time.perf_counter() >= self.deadline else "done"


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


def summarize(samples: Sequence[Sample], wall_s: float, order: Sequence[str]) -> dict[str, Any]:
    """Requests, errors, status counts, latency percentiles (ms) and rate per kind and in all."""
    kinds: dict[str, Any] = {}
    for kind in [k for k in order if any(s.kind == k for s in samples)]:
        mine = [s for s in samples if s.kind == kind]
        latencies = [s.latency_s - s.wait_s for s in mine]
        kinds[kind] = {
            "requests": len(mine),
            "errors": sum(s.failed for s in mine),
            "status_counts": _status_counts(mine),
            "latency_ms": latency_summary_ms(latencies),
            "requests_per_s": len(mine) / wall_s if wall_s > 0 else 0.0,
            "samples_latency_ms": [round(v * 1000, 3) for v in latencies],
        }
    errors = [s.error for s in samples if s.error is not None]
    return {
        "wall_s": wall_s,
        "requests": len(samples),
        "errors": len(errors),
        "status_counts": _status_counts(samples),
        "requests_per_s": len(samples) / wall_s if wall_s > 0 else 0.0,
        "error_messages": list(dict.fromkeys(errors))[:ERROR_MESSAGES_KEPT],
        "kinds": kinds,
    }


def _status_counts(samples: Sequence[Sample]) -> dict[str, int]:
    counts = Counter("none" if s.status is None else str(s.status) for s in samples)
    return dict(sorted(counts.items()))


_STARTED = time.perf_counter()


def _progress(message: str) -> None:
    print(f"[{time.perf_counter() - _STARTED:5.0f} s] {message}", flush=True)


def _check_loopback(*urls: str | None) -> None:
    for url in urls:
        if url is None or not url.startswith(LOOPBACK):
            raise SystemExit(f"not a loopback URL: {url!r}; this script only loads 127.0.0.1")


@dataclass
class CpuMeter:
    """CPU time (user + system) of named processes between :meth:`start` and :meth:`stop`."""

    processes: dict[str, psutil.Process]
    started: dict[str, float] = field(default_factory=dict)
    t0: float = 0.0

    @staticmethod
    def _cpu_s(proc: psutil.Process) -> float:
        times = proc.cpu_times()
        return float(times.user + times.system)

    def start(self) -> None:
        self.t0 = time.perf_counter()
        self.started = {name: self._cpu_s(proc) for name, proc in self.processes.items()}

    def stop(self) -> dict[str, Any]:
        """Per process: CPU seconds, % of one core over the wall time, RSS bytes now."""
        wall = time.perf_counter() - self.t0
        out: dict[str, Any] = {}
        for name, proc in self.processes.items():
            cpu_s = self._cpu_s(proc) - self.started[name]
            out[name] = {
                "cpu_s": cpu_s,
                "cpu_pct": 100 * cpu_s / wall if wall > 0 else None,
                "rss_bytes": int(proc.memory_info().rss),
            }
        return out


#: the health probe: a separate, light process (httpx only) that GETs URL/health every INTERVAL
#: seconds until its stdin closes, then prints its latencies (ms) and failures as one JSON line
PROBE_CODE = """
import json, sys, threading, time
import httpx
url, interval = sys.argv[1], float(sys.argv[2])
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
ok, failed = [], []
with httpx.Client(timeout=60.0) as client:
    while not stop.is_set():
        t = time.perf_counter()
        try:
            status = client.get(url + "/health").status_code
        except httpx.HTTPError as exc:
            status = type(exc).__name__
        (ok if status == 200 else failed).append((time.perf_counter() - t) * 1000)
        stop.wait(interval)
print(json.dumps({"ok_ms": ok, "failed_ms": failed}))
"""


@contextlib.contextmanager
def health_probe(url: str, interval_s: float = 0.25) -> Iterator[dict[str, Any]]:
    """While the block runs, a separate process times ``GET url/health`` every ``interval_s``
    (not counted as load): when a service answers it quickly while the load's requests are slow,
    the time goes elsewhere (its request handling, or this load generator). The yielded dict
    gets the probe's requests, failures and latency summary (ms) at exit."""
    proc = subprocess.Popen(
        [sys.executable, "-c", PROBE_CODE, url, str(interval_s)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    out: dict[str, Any] = {}
    try:
        yield out
    finally:
        stdout, _ = proc.communicate(input="", timeout=120)  # closing its stdin stops it
        lines = stdout.strip().splitlines()
        if proc.returncode == 0 and lines:
            got = json.loads(lines[-1])
            out["requests"] = len(got["ok_ms"]) + len(got["failed_ms"])
            out["failures"] = len(got["failed_ms"])
            out["latency_ms"] = latency_summary_ms([v / 1000 for v in got["ok_ms"]])
        else:
            out["error"] = f"the probe exited with {proc.returncode}"


def _children(cluster: Cluster) -> dict[str, psutil.Process]:
    return {child.name: psutil.Process(child.process.pid) for child in cluster.children}


# -- edge: N concurrent split sessions -------------------------------------------------------


@dataclass(frozen=True)
class CutTensors:
    """What one device sends in a split step: lower-cut activations (B x S x d, fp32), the
    attention mask (B x S) and the gradient at the upper cut (B x S x d, fp32)."""

    activations: torch.Tensor
    attention_mask: torch.Tensor
    grad: torch.Tensor


@dataclass
class _RecordingLink:
    """A CutLink running the body in this process and keeping what crossed the cut."""

    inner: LocalCutLink
    sent: dict[str, torch.Tensor] = field(default_factory=dict)

    def forward(self, step: int, activations: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        self.sent["activations"], self.sent["mask"] = activations.clone(), attention_mask.clone()
        return self.inner.forward(step, activations, attention_mask)

    def backward(self, step: int, grad: torch.Tensor) -> torch.Tensor:
        self.sent["grad"] = grad.clone()
        return self.inner.backward(step, grad)


def capture_cut_tensors(model: SplitModel, cfg: RunConfig, batch: Batch) -> CutTensors:
    """The cut tensors of one split step of ``batch`` from the run's initial adapter, computed
    in this process (head, body, tail, loss); the model's adapters are not changed."""
    segments = model.segments(cfg.split_params())
    start, train = model.initial_state(), cfg.train_params()
    link = _RecordingLink(LocalCutLink(EdgeStepper.create(segments.body, start, train)))
    DeviceStepper.create(segments.head, segments.tail, start, train).step(0, batch, link)
    return CutTensors(link.sent["activations"], link.sent["mask"], link.sent["grad"])


@dataclass
class _LastStatus:
    """The status of the last answer an httpx client received (event hook)."""

    status: int | None = None

    def on_response(self, response: httpx.Response) -> None:
        self.status = response.status_code


@dataclass
class _EdgePlan:
    """What every edge client thread shares."""

    run_id: str
    steps: int
    transport: TransportParams
    timeout_s: float
    barrier: threading.Barrier
    budget: Budget
    marks: dict[str, float] = field(default_factory=dict)


@dataclass
class _EdgeClientResult:
    samples: list[Sample] = field(default_factory=list)
    steps_done: int = 0
    #: done, error, budget (max requests or max seconds), barrier (another client failed first)
    ended: str = "done"


def _edge_client(plan: _EdgePlan, name: str, task: Task, cut: CutTensors) -> _EdgeClientResult:
    """Open the session, then ``plan.steps`` forward + backward exchanges; stops at its first error."""
    out = _EdgeClientResult()
    if task.edge_url is None or task.session_token is None or task.round is None:
        raise SystemExit(f"train task of {name} lacks an edge, a token or a round: {task}")
    token, round_index = task.session_token, task.round
    last = _LastStatus()
    edge = EdgeClient(task.edge_url, timeout_s=plan.timeout_s, retries=1)
    edge.client.event_hooks = {"response": [last.on_response]}

    def timed(kind: str, call: Callable[[], T]) -> tuple[bool, T | None]:
        """(sent and answered 2xx, the call's value)."""
        if not plan.budget.take():
            out.ended = "budget"
            return False, None
        last.status = None
        t0 = time.perf_counter()
        value: T | None = None
        error: str | None = None
        try:
            value = call()
        except Exception as exc:  # every failure is counted, none is fatal here
            error = _error_text(exc)
            out.ended = "error"
        out.samples.append(Sample(kind, t0 - plan.marks["t0"], time.perf_counter() - t0, last.status, error))
        return error is None, value

    try:
        plan.barrier.wait()
        ok, session_id = timed(
            "open session", partial(edge.open_session, plan.run_id, round_index, name, token)
        )
        if not ok or session_id is None:
            return out
        link = HttpCutLink(edge, session_id, plan.transport)
        for step in range(plan.steps):
            ok, _ = timed("forward", partial(link.forward, step, cut.activations, cut.attention_mask))
            if not ok:
                break
            ok, _ = timed("backward", partial(link.backward, step, cut.grad))
            if not ok:
                break
            out.steps_done += 1
    except threading.BrokenBarrierError:
        out.ended = "barrier"
    finally:
        edge.close()
    return out


Totals = dict[tuple[str, str], tuple[float, float]]


def histogram_totals(url: str) -> Totals | None:
    """(sum, count) of every histogram series a service exports at ``url``/metrics, keyed by
    (histogram name, labels as ``k=v,...``); None when /metrics is not readable (e.g. it needs a
    token). Not counted as load."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        response = httpx.get(f"{url}/metrics", timeout=10.0)
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    out: Totals = {}
    for family in text_string_to_metric_families(response.text):
        if family.type != "histogram":
            continue
        for sample in family.samples:
            suffix = sample.name.removeprefix(family.name)
            if suffix not in ("_sum", "_count"):
                continue
            key = (family.name, ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items())))
            total, count = out.get(key, (0.0, 0.0))
            out[key] = (total + sample.value, count) if suffix == "_sum" else (total, count + sample.value)
    return out


def histogram_means(before: Totals | None, after: Totals | None, name: str) -> dict[str, Any] | None:
    """Observations and mean (ms) per label set of histogram ``name`` between two scrapes."""
    if before is None or after is None:
        return None
    out: dict[str, Any] = {}
    for (family, labels), (total, count) in sorted(after.items()):
        old_total, old_count = before.get((family, labels), (0.0, 0.0))
        if family == name and count > old_count:
            n = count - old_count
            out[labels] = {"count": int(n), "mean_ms": 1000 * (total - old_total) / n}
    return out


def edge_scenario(args: argparse.Namespace, threads: int) -> dict[str, Any]:
    """N concurrent split sessions on one real edge process; see the module docstring."""
    from elsa.runtime.simulation import load_run_model

    n, steps = args.sessions, args.steps
    planned = n * (1 + 2 * steps)
    if planned > args.max_requests:
        raise SystemExit(f"edge: {planned} requests planned > --max-requests {args.max_requests}")
    cfg = sessions_config(n, args.probes)
    split = cfg.split_params()
    model = load_run_model(cfg, 5)  # bbc_news: 5 classes, as the edge derives them
    cuts = [capture_cut_tensors(model, cfg, batch) for batch in client_batches(n)]
    _progress(f"edge: cut tensors computed; starting a cloud and one edge for {n} sessions x {steps} steps")
    with edge_round(cfg, threads, args.env) as served:
        _check_loopback(served.plan.cloud_url, *(t.edge_url for t in served.tasks))
        _progress(f"edge: {n} devices joined, the edge serves their round; load starts")
        edge_url = str(served.tasks[0].edge_url)
        budget = Budget(args.max_requests)
        metrics_before = histogram_totals(edge_url)
        cpu = CpuMeter({**_children(served.cluster), "load generator": psutil.Process()})
        cpu.start()

        def start() -> None:  # runs once, as the barrier opens
            plan.marks["t0"] = time.perf_counter()
            budget.deadline = plan.marks["t0"] + args.max_seconds

        plan = _EdgePlan(
            served.run_id,
            steps,
            cfg.transport_params(),
            args.request_timeout_s,
            threading.Barrier(n, action=start, timeout=120.0),
            budget,
        )
        with health_probe(edge_url) as probe, ThreadPoolExecutor(max_workers=n) as pool:
            futures = [
                pool.submit(_edge_client, plan, f"device-{i:03d}", served.tasks[i], cuts[i]) for i in range(n)
            ]
            clients = [f.result() for f in futures]
        wall = time.perf_counter() - plan.marks.get("t0", time.perf_counter())
        processes = cpu.stop()
        _progress(f"edge: load done in {wall:.1f} s; stopping")
        metrics_after = histogram_totals(edge_url)
    _progress("edge: services stopped")
    samples = [s for c in clients for s in c.samples]
    steps_done = sum(c.steps_done for c in clients)
    ended = Counter(c.ended for c in clients)
    return {
        "params": {
            "sessions": n,
            "steps_per_session": steps,
            "batch_size": BATCH,
            "max_length": SEQ,
            "model": cfg.model.name,
            "split": [split.head_blocks, split.tail_blocks],
            "transport_dtype": cfg.transport.dtype,
            "cut_tensor_shape": list(cuts[0].activations.shape),
            "edge_torch_threads": threads,
            "max_requests": args.max_requests,
            "requests_planned": planned,
            "max_seconds": args.max_seconds,
            "request_timeout_s": args.request_timeout_s,
        },
        "clients": n,
        "sessions": sum(1 for s in samples if s.kind == "open session" and not s.failed),
        "steps_done": steps_done,
        "steps_per_s": steps_done / wall if wall > 0 else 0.0,
        "clients_ended": dict(sorted(ended.items())),
        "stopped_by": "max_requests" if budget.exhausted else ("max_seconds" if ended["budget"] else "done"),
        "processes": processes,
        "edge_health_probe": probe,
        # the edge's own view: body compute and the wait for its one compute lock, by phase;
        # time to answer each request, by route (None when /metrics is not readable)
        "edge_compute": histogram_means(metrics_before, metrics_after, "elsa_edge_split_step_seconds"),
        "edge_compute_wait": histogram_means(metrics_before, metrics_after, "elsa_edge_compute_wait_seconds"),
        "server_request": histogram_means(
            metrics_before, metrics_after, "elsa_http_request_duration_seconds"
        ),
        **summarize(samples, wall, EDGE_KINDS),
    }


# -- cloud: M devices long-polling ------------------------------------------------------------


def cloud_run_config(devices: int, probes: int) -> RunConfig:
    """A run of ``devices`` devices on one edge (the configured cut, no dynamic split)."""
    return parse_config(
        {
            "name": "load-cloud",
            "topology": {"edges": 1, "devices_per_edge": devices},
            "train": {"edge_rounds": 1, "batch_size": BATCH, "max_length": SEQ},
            "control": {"num_probes": probes, "dynamic_split": False},
        }
    )


@dataclass
class _CloudLoad:
    """The samples and the bounds every node of the cloud scenario shares."""

    budget: Budget
    timeout_s: float
    t0: float
    samples: list[Sample] = field(default_factory=list)

    async def request(
        self,
        client: httpx.AsyncClient,
        kind: str | Callable[[httpx.Response], str],
        method: str,
        path: str,
        *,
        token: str | None = None,
        wait_s: float = 0.0,
        **kwargs: Any,
    ) -> tuple[bool, httpx.Response | None]:
        """(sent, the answer if it was 2xx). Not sent when the budget is spent. ``kind`` may
        name the request from its 2xx answer."""
        if not self.budget.take():
            return False, None
        headers = {"authorization": f"Bearer {token}"} if token else {}
        started = time.perf_counter()
        try:
            response = await client.request(
                method, path, headers=headers, timeout=wait_s + self.timeout_s, **kwargs
            )
        except httpx.HTTPError as exc:
            name = kind if isinstance(kind, str) else "poll → failed"
            self.samples.append(
                Sample(name, started - self.t0, time.perf_counter() - started, None, _error_text(exc))
            )
            return True, None
        elapsed = time.perf_counter() - started
        ok = 200 <= response.status_code < 300
        name = kind if isinstance(kind, str) else (kind(response) if ok else "poll → failed")
        error = (
            None
            if ok
            else f"{method} {path.split('?')[0]}: HTTP {response.status_code} {response.text[:200]}"
        )
        waited = wait_s if name == "poll → idle" else 0.0
        self.samples.append(Sample(name, started - self.t0, elapsed, response.status_code, error, waited))
        return True, response if ok else None


@dataclass
class _RunClock:
    """When the run was created (perf_counter) and when each node got its first task after it."""

    created_at: float | None = None
    received: dict[str, tuple[str, float]] = field(default_factory=dict)


async def _node(
    load: _CloudLoad,
    client: httpx.AsyncClient,
    args: argparse.Namespace,
    name: str,
    token: str,
    offset_s: float,
    clock: _RunClock,
) -> None:
    """Long-poll tasks until the bounds (or ``--polls``) end it; heartbeat meanwhile."""
    done = asyncio.Event()

    async def heartbeats() -> None:
        delay = offset_s
        while True:
            try:
                await asyncio.wait_for(done.wait(), delay)
                return
            except TimeoutError:
                pass
            sent, _ = await load.request(client, "heartbeat", "POST", "/v1/nodes/me/heartbeat", token=token)
            if not sent:
                return
            delay = args.heartbeat_s

    beating = asyncio.create_task(heartbeats())
    after, polls = 0, 0
    try:
        while args.polls is None or polls < args.polls:
            wait = min(args.poll_wait_s, load.budget.deadline - time.perf_counter())
            if wait < MIN_POLL_WAIT_S:
                break
            wait = round(wait, 3)

            def kind(response: httpx.Response, after: int = after) -> str:
                return (
                    "poll → task"
                    if int(response.headers.get("x-elsa-task-seq", "0")) > after
                    else "poll → idle"
                )

            sent, response = await load.request(
                client,
                kind,
                "GET",
                "/v1/tasks/next",
                token=token,
                wait_s=wait,
                params={"after": after, "wait_s": wait},
            )
            if not sent:
                break
            polls += 1
            if response is None:
                await asyncio.sleep(ERROR_PAUSE_S)
                continue
            seq = int(response.headers.get("x-elsa-task-seq", "0"))
            if seq > after:
                after = seq
                if clock.created_at is not None and name not in clock.received:
                    task_kind = str(response.json().get("kind"))
                    clock.received[name] = (task_kind, time.perf_counter() - clock.created_at)
    finally:
        done.set()
        await beating


@dataclass
class _LoopLag:
    """How late this process's event loop wakes a 0.1 s sleep: when the load generator itself
    is short of CPU, every latency it measures includes this."""

    lags_s: list[float] = field(default_factory=list)

    async def watch(self, interval_s: float = 0.1) -> None:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(interval_s)
            self.lags_s.append(max(time.perf_counter() - t - interval_s, 0.0))


def _client(cloud_url: str) -> httpx.AsyncClient:
    """One node's client of the cloud, as each device has its own: at most a poll and a
    heartbeat in flight; idle connections dropped before uvicorn's 5 s keep-alive closes them
    (reusing one the server is closing fails without an answer, a client-side race). One client
    shared by hundreds of nodes queued requests for seconds in httpx's connection pool."""
    limits = httpx.Limits(max_connections=2, max_keepalive_connections=2, keepalive_expiry=KEEPALIVE_S)
    return httpx.AsyncClient(base_url=cloud_url, limits=limits)


async def _join(load: _CloudLoad, client: httpx.AsyncClient, secret: str, body: dict[str, Any]) -> str | None:
    """Join; the node's bearer token, or None if the join failed or was not sent."""
    _, response = await load.request(
        client, "join", "POST", "/v1/nodes/join", json={"join_secret": secret, **body}
    )
    return None if response is None else str(response.json()["token"])


async def _cloud_load(args: argparse.Namespace, cloud_url: str, secret: str, admin: str) -> dict[str, Any]:
    """Joins, polls, heartbeats and (unless --no-run) a run, within the budget."""
    m = args.devices
    rng = random.Random(0)
    nodes = [(f"device-{i:03d}", {"role": "device", "name": f"device-{i:03d}"}) for i in range(m)]
    if args.run:
        edge_url = f"{LOOPBACK}{free_port()}"  # nothing listens there
        nodes.append(
            ("edge-standin", {"role": "edge", "name": "edge-standin", "url": edge_url, "capacity": m})
        )
    async with contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(_client(cloud_url)) for _ in nodes]
        operator = await stack.enter_async_context(_client(cloud_url))
        t0 = time.perf_counter()
        load = _CloudLoad(Budget(args.max_requests, t0 + args.max_seconds), args.request_timeout_s, t0)
        tokens = await asyncio.gather(
            *(_join(load, client, secret, body) for client, (_, body) in zip(clients, nodes, strict=True))
        )
        joined_s = time.perf_counter() - t0
        clock = _RunClock()
        polling = [
            _node(load, client, args, name, token, rng.uniform(0, args.heartbeat_s), clock)
            for client, (name, _), token in zip(clients, nodes, tokens, strict=True)
            if token is not None
        ]
        extra: list[Awaitable[None]] = []
        run_id: list[str] = []
        if args.run:
            extra.append(_create_run(load, operator, args, admin, clock, run_id))
        polling_started = time.perf_counter()
        lag = _LoopLag()
        watching = asyncio.create_task(lag.watch())
        await asyncio.gather(*polling, *extra)
        wall = time.perf_counter() - t0
        watching.cancel()
    devices_with_task = {n: v for n, v in clock.received.items() if v[0] == "train"}
    return {
        "joined": sum(t is not None for t in tokens),
        "join_phase_s": joined_s,
        "polling_s": time.perf_counter() - polling_started,
        "run_id": run_id[0] if run_id else None,
        "tasks_received": dict(sorted(Counter(kind for kind, _ in clock.received.values()).items())),
        "devices_with_train_task": len(devices_with_task),
        "task_delivery_ms": latency_summary_ms([s for _, s in devices_with_task.values()]),
        "stopped_by": load.budget.stopped_by(),
        "load_generator_loop_lag_ms": latency_summary_ms(lag.lags_s),
        **summarize(load.samples, wall, CLOUD_KINDS),
    }


async def _create_run(
    load: _CloudLoad,
    client: httpx.AsyncClient,
    args: argparse.Namespace,
    admin: str,
    clock: _RunClock,
    out: list[str],
) -> None:
    await asyncio.sleep(args.run_at_s)
    cfg = cloud_run_config(args.devices, args.probes)
    created = time.perf_counter()
    _, response = await load.request(
        client, "create run", "POST", "/v1/runs", token=admin, json={"config": cfg.model_dump(mode="json")}
    )
    if response is not None:
        clock.created_at = created
        out.append(str(response.json()["run_id"]))


def cloud_scenario(args: argparse.Namespace) -> dict[str, Any]:
    """M devices (plus a stand-in edge) polling one real cloud process; see the module docstring."""
    m = args.devices
    cfg = cloud_run_config(m, args.probes)
    _progress(f"cloud: starting a cloud for {m} polling devices")
    with tempfile.TemporaryDirectory() as tmp, running_cluster(Path(tmp)) as cluster:
        plan = dataclasses.replace(plan_demo(cfg, Path(tmp), None, None), edge_ports=(), device_ports=())
        _check_loopback(plan.cloud_url)
        env = {"cloud": {"ELSA_CLOUD_ROUND_DEADLINE_S": "3600", **args.env.get("cloud", {})}}
        start_services(cluster, plan, Path(tmp), env, with_devices=False)
        wait_healthy([plan.cloud_url], 120)
        _progress("cloud: healthy; load starts")
        cpu = CpuMeter({**_children(cluster), "load generator": psutil.Process()})
        metrics_before = histogram_totals(plan.cloud_url)
        cpu.start()
        with health_probe(plan.cloud_url) as probe:
            result = asyncio.run(_cloud_load(args, plan.cloud_url, plan.join_secret, plan.admin_token))
        processes = cpu.stop()
        _progress("cloud: load done; stopping")
        metrics_after = histogram_totals(plan.cloud_url)
        nodes = Operator(plan.cloud_url, plan.admin_token).get("/v1/nodes")  # not counted
    _progress("cloud: services stopped")
    return {
        "params": {
            "devices": m,
            "standin_edge": args.run,
            "poll_wait_s": args.poll_wait_s,
            "polls_per_node": args.polls,
            "heartbeat_s": args.heartbeat_s,
            "run_at_s": args.run_at_s if args.run else None,
            "num_probes": args.probes,
            "max_requests": args.max_requests,
            "max_seconds": args.max_seconds,
            "request_timeout_s": args.request_timeout_s,
        },
        "clients": m + int(args.run),
        "devices": m,
        "devices_alive_after": sum(1 for n in nodes if n["role"] == "device" and n["alive"]),
        "processes": processes,
        "cloud_health_probe": probe,
        # the cloud's own view: time to answer each request, by route (None: /metrics unreadable)
        "server_request": histogram_means(
            metrics_before, metrics_after, "elsa_http_request_duration_seconds"
        ),
        **result,
    }


# -- report -----------------------------------------------------------------------------------


def _rows(name: str, part: dict[str, Any]) -> list[list[Any]]:
    rows: list[list[Any]] = []
    for kind, row in part["kinds"].items():
        lat = row["latency_ms"]
        label = {"poll → idle": "poll → idle (beyond wait)", "poll → task": "poll → task (incl. wait)"}.get(
            kind, kind
        )
        rows.append(
            [
                name,
                label,
                part["clients"],
                row["requests"],
                row["errors"],
                lat["p50"],
                lat["p90"],
                lat["p99"],
                lat["max"],
                row["requests_per_s"],
            ]
        )
    rows.append(
        [
            name,
            "all",
            part["clients"],
            part["requests"],
            part["errors"],
            None,
            None,
            None,
            None,
            part["requests_per_s"],
        ]
    )
    return rows


def _cpu_text(processes: dict[str, Any]) -> str:
    cpu = ", ".join(
        f"{name} {row['cpu_pct']:.0f} %" for name, row in processes.items() if row["cpu_pct"] is not None
    )
    return f"CPU (% of one core) {cpu}"


def _server_text(part: dict[str, Any], service: str, routes: dict[str, str]) -> str:
    """The service's own mean time to answer some routes, and the health probe's view."""
    server = part["server_request"] or {}
    means = [
        f"{label} {server[key]['mean_ms']:.0f} ms"
        for label, key in routes.items()
        if key in server and server[key]["mean_ms"] is not None
    ]
    probe = part[f"{service}_health_probe"]
    lat = probe.get("latency_ms") or {}
    probe_text = (
        f"a separate process's `GET /health` every 0.25 s meanwhile: p50 {lat['p50']:.0f} ms, max "
        f"{lat['max']:.0f} ms, {probe['failures']} failed"
        if lat.get("p50") is not None
        else "no health probe result"
    )
    own = f"the {service}'s own metrics, mean time to answer: {', '.join(means)}; " if means else ""
    return own + probe_text


def study_report(record: dict[str, Any]) -> dict[str, Any]:
    """The ``report`` dict (``elsa report``'s study contract) of a load record."""
    parts = record["scenarios"]
    text = []
    if "edge" in parts:
        e, p = parts["edge"], parts["edge"]["params"]
        compute, wait = e["edge_compute"] or {}, e["edge_compute_wait"] or {}
        lock_text = ""
        if "phase=forward" in compute and "phase=backward" in compute:
            lock_text = (
                f" Body compute {compute['phase=forward']['mean_ms']:.0f} ms per forward and "
                f"{compute['phase=backward']['mean_ms']:.0f} ms per backward on average, after waiting "
                f"{wait.get('phase=forward', {}).get('mean_ms', 0):.0f} / "
                f"{wait.get('phase=backward', {}).get('mean_ms', 0):.0f} ms for the edge's one compute lock."
            )
        routes = {
            "open": "method=POST,route=/v1/sessions",
            "forward": "method=POST,route=/v1/sessions/{session_id}/forward",
            "backward": "method=POST,route=/v1/sessions/{session_id}/backward",
        }
        text.append(
            f"**edge**: one real edge process ({p['edge_torch_threads']} torch thread(s)), {p['sessions']} concurrent "
            f"split sessions of {p['model']} (cut h{p['split'][0]}/t{p['split'][1]}, batch {p['batch_size']} × "
            f"{p['max_length']}, {p['transport_dtype']} cut tensors of shape {p['cut_tensor_shape']} replayed from one "
            f"real step per device), {p['steps_per_session']} forward + backward steps each, as fast as the edge "
            f"answers: {e['steps_done']} steps at {e['steps_per_s']:.2f} steps/s in all, ended by {e['stopped_by']}; "
            f"edge RSS {e['processes']['edge-0']['rss_bytes'] / 2**20:.0f} MiB; {_cpu_text(e['processes'])}; "
            f"{_server_text(e, 'edge', routes)}." + lock_text
        )
    if "cloud" in parts:
        c, p = parts["cloud"], parts["cloud"]["params"]
        run = ""
        if p["standin_edge"]:
            d = c["task_delivery_ms"]
            run = (
                f" {p['run_at_s']:.0f} s into the polling the operator created a run of {p['devices']} devices on a "
                f"stand-in edge (a joined node that polls and heartbeats too, counted in clients): "
                f"{c['devices_with_train_task']} devices got their train task"
                + (
                    f", p50 {d['p50'] / 1000:.1f} s and max {d['max'] / 1000:.1f} s after the run's creation "
                    "(the cloud loads the run's model first); *poll → task* includes that wait."
                    if d["p50"] is not None
                    else "."
                )
            )
        polls = "until the time was up" if p["polls_per_node"] is None else f"{p['polls_per_node']} time(s)"
        lag = c["load_generator_loop_lag_ms"]
        routes = {
            "join": "method=POST,route=/v1/nodes/join",
            "heartbeat": "method=POST,route=/v1/nodes/me/heartbeat",
        }
        text.append(
            f"**cloud**: one real cloud process (SQLite, embedded Redis), {p['devices']} devices joined at once, "
            f"each with its own HTTP client, then each long-polled `GET /v1/tasks/next` (wait up to "
            f"{p['poll_wait_s']:g} s) {polls} and heartbeat every {p['heartbeat_s']:g} s; ended by "
            f"{c['stopped_by']}, {c['devices_alive_after']} devices alive at the end; cloud RSS "
            f"{c['processes']['cloud']['rss_bytes'] / 2**20:.0f} MiB; {_cpu_text(c['processes'])}; the load "
            f"generator's event loop ran late by p50 {lag['p50'] or 0:.0f} / max {lag['max'] or 0:.0f} ms; "
            f"{_server_text(c, 'cloud', routes)}." + run
        )
    text.append(
        "Errors = non-2xx answers + requests without an answer (no retries); an idle poll's latency is the time "
        "beyond the wait it asked for; requests/s = requests ÷ the scenario's wall time (joins included for the "
        "cloud). Bounds per scenario: "
        f"{record['params']['max_requests']} requests, {record['params']['max_seconds']:g} s."
    )
    rows = [row for name in ("edge", "cloud") if name in parts for row in _rows(name, parts[name])]
    return {
        "title": "Load on loopback: one edge under concurrent split sessions, the cloud under polling devices",
        "text": "\n\n".join(text),
        "tables": [{"title": "Requests by kind", "columns": COLUMNS, "rows": rows}],
        "figures": [],
    }


def print_report(record: dict[str, Any]) -> None:
    """The table, then any error messages."""
    for table in record["report"]["tables"]:
        print_table(
            table["title"], table["columns"], [[format_cell(v) for v in row] for row in table["rows"]]
        )
    for name, part in record["scenarios"].items():
        for message in part["error_messages"]:
            print(f"{name} error: {message}")


# -- command line -----------------------------------------------------------------------------


def _env_options(values: Sequence[str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for value in values:
        kind, sep, assignment = value.partition(":")
        key, eq, setting = assignment.partition("=")
        if not sep or not eq or kind not in ("cloud", "edge") or not key:
            raise SystemExit(f"--env {value!r}: expected KIND:NAME=VALUE with KIND cloud or edge")
        out.setdefault(kind, {})[key] = setting
    return out


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The options; ``--quick`` overrides the sizes with the smoke test's."""
    parser = argparse.ArgumentParser(description=(__doc__ or NAME).splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 16 sessions x 2 steps; 200 devices x 1 poll of 1 s, heartbeats every 0.5 s, no run",
    )
    parser.add_argument("--scenario", choices=("edge", "cloud", "all"), default="all")
    parser.add_argument("--threads", type=int, default=None, help="torch threads here and in the edge")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / f"{NAME}.json")
    parser.add_argument("--max-requests", type=int, default=5000, help="requests per scenario at most")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="load time per scenario at most")
    parser.add_argument(
        "--request-timeout-s", type=float, default=120.0, help="per request (beyond a poll's wait)"
    )
    parser.add_argument("--env", action="append", default=[], metavar="KIND:NAME=VALUE")
    parser.add_argument("--probes", type=int, default=32, help="probe sentences of the runs' configs")
    edge = parser.add_argument_group("edge scenario")
    edge.add_argument("--sessions", type=int, default=16, help="concurrent split sessions N")
    edge.add_argument("--steps", type=int, default=10, help="split steps K per session")
    cloud = parser.add_argument_group("cloud scenario")
    cloud.add_argument("--devices", type=int, default=200, help="polling devices M")
    cloud.add_argument("--poll-wait-s", type=float, default=10.0, help="long-poll wait a device asks for")
    cloud.add_argument("--polls", type=int, default=None, help="polls per node at most (default: until time)")
    cloud.add_argument("--heartbeat-s", type=float, default=5.0, help="heartbeat interval per node")
    cloud.add_argument("--run", action=argparse.BooleanOptionalAction, default=True, help="create a run")
    cloud.add_argument(
        "--run-at-s", type=float, default=10.0, help="when the run is created, into the polling"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.sessions, args.steps = 16, 2
        args.devices, args.polls, args.poll_wait_s, args.heartbeat_s, args.run = 200, 1, 1.0, 0.5, False
    if min(args.sessions, args.steps, args.devices, args.max_requests) < 1 or args.max_seconds <= 0:
        raise SystemExit("sizes and bounds must be positive")
    args.env = _env_options(args.env)
    return args


def main() -> None:
    args = parse_args()
    quiet_transformers()
    threads = set_torch_threads(args.threads)
    machine = machine_info()
    scenarios: dict[str, Any] = {}
    if args.scenario in ("edge", "all"):
        scenarios["edge"] = edge_scenario(args, threads)
    if args.scenario in ("cloud", "all"):
        scenarios["cloud"] = cloud_scenario(args)
    record: dict[str, Any] = {
        "benchmark": NAME,
        "description": "latency and errors of one edge under concurrent split sessions and of the cloud "
        "under polling devices, on loopback",
        "machine": machine,
        "params": {
            "quick": args.quick,
            "scenario": args.scenario,
            "threads": threads,
            "max_requests": args.max_requests,
            "max_seconds": args.max_seconds,
            "env": {kind: dict(values) for kind, values in args.env.items()},
            "httpx": httpx.__version__,
        },
        "errors": sum(part["errors"] for part in scenarios.values()),
        "scenarios": scenarios,
    }
    record["report"] = study_report(record)
    print_report(record)
    print(f"wrote {write_results(args.out, record)}")
    if record["errors"]:
        print(f"{record['errors']} request(s) failed", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
