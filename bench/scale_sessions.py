"""Part 2 of the scale study (``bench/scale.py``): concurrent split sessions on one edge.

A real cloud and one real edge run as processes on loopback (``elsa.runtime.launcher``). This
process joins max(C) devices, creates a run whose round assigns all of them to the edge, then
for each client count C starts C threads; each opens its split session
(``EdgeClient.open_session``), runs one warm-up step, waits for the others, and times ``steps``
training steps of ``DeviceStepper.step`` through ``HttpCutLink`` (the device agent's link;
batch 8 x 32). Every HTTP request and response is counted through httpx event hooks (no
retries): any non-2xx answer or request without an answer is an error. Step latency is the
whole split step as the device sees it (its head/tail compute included); the HTTP time is the
forward + backward exchanges of the step. The total request count is checked against
``max_requests`` before anything starts, and each C level stops starting steps after
``max_level_s``.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import torch

from benchkit import latency_summary_ms
from elsa.errors import NotFoundError
from elsa.infra.http import CloudClient, EdgeClient, HttpCutLink
from elsa.model.adapters import AdapterState
from elsa.model.split import HeadSegment, TailSegment
from elsa.model.training import Batch, DeviceStepper
from elsa.params import TrainParams, TransportParams
from elsa.runtime.config import RunConfig, parse_config
from elsa.runtime.launcher import (
    Cluster,
    DemoPlan,
    Operator,
    plan_demo,
    running_cluster,
    start_services,
    wait_healthy,
)
from elsa.wire.control import JoinRequest, Task

BATCH, SEQ = 8, 32
WARMUP_STEPS = 1


class _SerialHead(HeadSegment):
    """A head view whose forward holds ``lock``: ``functional_call`` swaps the parameters of the
    shared model's modules for the duration of the call, so two client threads must not run it
    at once (the edge, too, runs one body computation at a time). Backward passes need no lock:
    autograd uses the tensors saved in the graph, not the modules."""

    def __init__(self, head: HeadSegment, lock: threading.Lock) -> None:
        super().__init__(head.task_model, head.stop)
        self.lock = lock

    def run(self, state: Mapping[str, torch.Tensor], *args: Any) -> torch.Tensor:
        with self.lock:
            return super().run(state, *args)


class _SerialTail(TailSegment):
    """The tail counterpart of :class:`_SerialHead`."""

    def __init__(self, tail: TailSegment, lock: threading.Lock) -> None:
        super().__init__(tail.task_model, tail.start)
        self.lock = lock

    def run(self, state: Mapping[str, torch.Tensor], *args: Any) -> torch.Tensor:
        with self.lock:
            return super().run(state, *args)


@dataclass
class _TimedLink:
    """A :class:`~elsa.model.training.CutLink` adding the time spent in ``inner``'s exchanges."""

    inner: HttpCutLink
    elapsed_s: float = 0.0

    def forward(self, step: int, activations: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        t0 = time.perf_counter()
        try:
            return self.inner.forward(step, activations, attention_mask)
        finally:
            self.elapsed_s += time.perf_counter() - t0

    def backward(self, step: int, grad: torch.Tensor) -> torch.Tensor:
        t0 = time.perf_counter()
        try:
            return self.inner.backward(step, grad)
        finally:
            self.elapsed_s += time.perf_counter() - t0


@dataclass
class _Level:
    """What every client of one C level shares."""

    run_id: str
    head: HeadSegment
    tail: TailSegment
    start: AdapterState
    train: TrainParams
    transport: TransportParams
    steps: int
    timeout_s: float
    barrier: threading.Barrier
    deadline: float = 0.0


@dataclass
class _Client:
    """One client's samples and HTTP counts for one level."""

    step_s: list[float] = field(default_factory=list)
    http_s: list[float] = field(default_factory=list)
    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    error: str | None = None
    #: stopped because another client failed (its own failure is counted there)
    stopped_by_other: bool = False
    truncated: bool = False
    end: float | None = None

    def on_request(self, _request: httpx.Request) -> None:
        self.requests += 1

    def on_response(self, response: httpx.Response) -> None:
        self.statuses[response.status_code] += 1

    @property
    def non_2xx(self) -> int:
        return sum(n for code, n in self.statuses.items() if not 200 <= code < 300)

    @property
    def errors(self) -> int:
        """Non-2xx answers + requests without an answer + a failure with neither behind it."""
        unanswered = self.requests - sum(self.statuses.values())
        other = int(self.error is not None and not self.stopped_by_other and self.non_2xx + unanswered == 0)
        return self.non_2xx + unanswered + other


def _run_client(level: _Level, name: str, task: Task, batch: Batch) -> _Client:
    """Open the split session, one warm-up step, then ``level.steps`` timed steps."""
    out = _Client()
    if task.edge_url is None or task.session_token is None or task.round is None:
        out.error = "train task without an edge, a session token or a round"
        level.barrier.abort()
        return out
    edge = EdgeClient(task.edge_url, timeout_s=level.timeout_s, retries=1)
    edge.client.event_hooks = {"request": [out.on_request], "response": [out.on_response]}
    try:
        session = edge.open_session(level.run_id, task.round, name, task.session_token)
        stepper = DeviceStepper.create(level.head, level.tail, level.start, level.train)
        link = _TimedLink(HttpCutLink(edge, session, level.transport))
        for step in range(WARMUP_STEPS):
            stepper.step(step, batch, link)
        level.barrier.wait()
        for k in range(level.steps):
            if time.perf_counter() > level.deadline:
                out.truncated = True
                break
            link.elapsed_s = 0.0
            t0 = time.perf_counter()
            stepper.step(WARMUP_STEPS + k, batch, link)
            out.step_s.append(time.perf_counter() - t0)
            out.http_s.append(link.elapsed_s)
        out.end = time.perf_counter()
    except threading.BrokenBarrierError:
        out.error = "BrokenBarrierError: another client failed, or the level's start timed out"
        out.stopped_by_other = True
    except Exception as exc:  # every failure is counted and reported, none is fatal here
        out.error = f"{type(exc).__name__}: {exc}"[:300]
        level.barrier.abort()
    finally:
        edge.close()
    return out


def sessions_config(devices: int, probes: int) -> RunConfig:
    """The run whose one round puts ``devices`` devices on one edge: batch ``BATCH`` x ``SEQ``,
    the configured cut (no dynamic split), an edge round long enough for any number of steps."""
    return parse_config(
        {
            "name": "scale-sessions",
            "topology": {"edges": 1, "devices_per_edge": devices},
            "train": {"edge_rounds": 1, "local_steps": 100_000, "batch_size": BATCH, "max_length": SEQ},
            "control": {"num_probes": probes, "dynamic_split": False},
        }
    )


def client_batches(count: int) -> list[Batch]:
    """One batch per client (seeded by its index): random token ids, full mask, 5 labels."""
    batches = []
    for i in range(count):
        g = torch.Generator().manual_seed(i)
        ids = torch.randint(1000, 20000, (BATCH, SEQ), generator=g)
        batches.append(Batch(ids, torch.ones_like(ids), torch.randint(0, 5, (BATCH,), generator=g)))
    return batches


def join_devices(cloud_url: str, secret: str, count: int, stop: threading.Event) -> list[CloudClient]:
    """Join ``count`` devices (``device-000`` ...), each heartbeating every 2 s until ``stop``."""
    clouds = []
    for i in range(count):
        cloud = CloudClient(cloud_url, timeout_s=60)
        cloud.join(JoinRequest(join_secret=secret, role="device", name=f"device-{i:03d}"))
        threading.Thread(target=cloud.heartbeat_until, args=(stop, 2.0), daemon=True).start()
        clouds.append(cloud)
    return clouds


def train_task(cloud: CloudClient, run_id: str) -> Task:
    """Long-poll until this device's train task of ``run_id`` arrives."""
    after = 0
    while True:
        after, task = cloud.next_task(after, 20.0)
        if task.kind == "train" and task.run_id == run_id:
            return task


def wait_edge_ready(task: Task, run_id: str, name: str, timeout_s: float) -> None:
    """Until the edge serves the round (it loads the model first); not counted."""
    if task.edge_url is None or task.session_token is None or task.round is None:
        raise SystemExit(f"train task of {name} lacks an edge, a token or a round: {task}")
    edge = EdgeClient(task.edge_url, timeout_s=60)
    give_up = time.monotonic() + timeout_s
    try:
        while True:
            try:
                edge.open_session(run_id, task.round, name, task.session_token)
                return
            except NotFoundError:
                if time.monotonic() > give_up:
                    raise
                time.sleep(0.5)
    finally:
        edge.close()


@dataclass
class EdgeRound:
    """A real cloud and one real edge process on loopback, serving round 1 of ``run_id`` to the
    joined devices ``device-000`` ... (``tasks[i]`` is device i's train task)."""

    cluster: Cluster
    plan: DemoPlan
    run_id: str
    tasks: list[Task]
    edge: psutil.Process


@contextlib.contextmanager
def edge_round(
    cfg: RunConfig,
    threads: int,
    env: Mapping[str, Mapping[str, str]] | None = None,
    ready_timeout_s: float = 180.0,
) -> Iterator[EdgeRound]:
    """Start the cloud and one edge (``threads`` torch threads, 1 h round deadlines, plus ``env``
    per process kind), join ``cfg.num_devices`` devices, create ``cfg``'s run and wait until
    the edge serves its first round. Every process is stopped on exit."""
    split = cfg.split_params()
    with tempfile.TemporaryDirectory() as tmp, running_cluster(Path(tmp)) as cluster:
        plan = plan_demo(cfg, Path(tmp), None, None)
        overrides: dict[str, dict[str, str]] = {
            "edge": {"ELSA_EDGE_TORCH_THREADS": str(threads), "ELSA_EDGE_EDGE_ROUND_DEADLINE_S": "3600"},
            "cloud": {"ELSA_CLOUD_ROUND_DEADLINE_S": "3600"},
        }
        for kind, extra in (env or {}).items():
            overrides.setdefault(kind, {}).update(extra)
        start_services(cluster, plan, Path(tmp), overrides, with_devices=False)
        wait_healthy([c.url for c in cluster.children if c.url], ready_timeout_s)
        edge = psutil.Process(next(c for c in cluster.children if c.kind == "edge").process.pid)
        stop = threading.Event()
        clouds = join_devices(plan.cloud_url, plan.join_secret, cfg.num_devices, stop)
        try:
            run_id = str(Operator(plan.cloud_url, plan.admin_token).create_run(cfg)["run_id"])
            tasks = [train_task(cloud, run_id) for cloud in clouds]
            cuts = {tuple(t.split) for t in tasks if t.split is not None}
            if cuts - {(split.head_blocks, split.tail_blocks)}:
                raise SystemExit(f"the cloud planned other cuts than {split}: {sorted(cuts)}")
            wait_edge_ready(tasks[0], run_id, "device-000", ready_timeout_s)
            yield EdgeRound(cluster, plan, run_id, tasks, edge)
        finally:
            stop.set()
            for cloud in clouds:
                cloud.close()


def sessions_study(args: argparse.Namespace, threads: int) -> dict[str, Any]:
    """Every C level against one real edge process; see the module docstring."""
    from elsa.runtime.simulation import load_run_model

    levels, most = sorted(args.clients), max(args.clients)
    requests_planned = sum(c * (1 + 2 * (WARMUP_STEPS + args.steps)) for c in levels)
    if requests_planned > args.max_requests:
        raise SystemExit(f"{requests_planned} requests planned > --max-requests {args.max_requests}")
    cfg = sessions_config(most, args.probes)
    model = load_run_model(cfg, 5)  # bbc_news: 5 classes, as the edge derives them
    split = cfg.split_params()
    segments = model.segments(split)
    lock = threading.Lock()
    head, tail = _SerialHead(segments.head, lock), _SerialTail(segments.tail, lock)
    batches = client_batches(most)
    results = []
    with edge_round(cfg, threads) as served:
        run_id, tasks, edge_proc = served.run_id, served.tasks, served.edge

        def edge_cpu_s() -> float:
            times = edge_proc.cpu_times()
            return float(times.user + times.system)

        for c in levels:
            marks: dict[str, float] = {}

            def mark_start(marks: dict[str, float] = marks) -> None:  # runs once, as the barrier opens
                marks["edge_cpu_s"], marks["t0"] = edge_cpu_s(), time.perf_counter()

            level = _Level(
                run_id,
                head,
                tail,
                model.initial_state(),
                cfg.train_params(),
                cfg.transport_params(),
                args.steps,
                args.request_timeout_s,
                threading.Barrier(c, action=mark_start, timeout=args.max_level_s),
            )
            level.deadline = time.perf_counter() + args.max_level_s
            with ThreadPoolExecutor(max_workers=c) as pool:
                futures = [
                    pool.submit(_run_client, level, f"device-{i:03d}", tasks[i], batches[i]) for i in range(c)
                ]
                clients = [f.result() for f in futures]
            cpu_s = edge_cpu_s() - marks.get("edge_cpu_s", 0.0)
            ends = [x.end for x in clients if x.end is not None]
            wall = max(ends) - marks["t0"] if ends and "t0" in marks else 0.0
            steps = [s for x in clients for s in x.step_s]
            statuses: Counter[int] = Counter()
            for x in clients:
                statuses.update(x.statuses)
            results.append(
                {
                    "clients": c,
                    "steps_per_client": args.steps,
                    "steps": len(steps),
                    "wall_s": wall,
                    "steps_per_s": len(steps) / wall if wall > 0 else 0.0,
                    "step_ms": latency_summary_ms(steps),
                    "http_ms": latency_summary_ms([s for x in clients for s in x.http_s]),
                    "requests": sum(x.requests for x in clients),
                    "status_counts": {str(k): v for k, v in sorted(statuses.items())},
                    "errors": sum(x.errors for x in clients),
                    "client_errors": [x.error for x in clients if x.error],
                    "truncated_clients": sum(x.truncated for x in clients),
                    "edge_rss_bytes": edge_proc.memory_info().rss,
                    "edge_cpu_s": cpu_s,
                    "samples_step_ms": [s * 1000 for s in steps],
                }
            )
            r = results[-1]
            print(
                f"C={c}: {r['steps']} steps in {wall:.1f} s, p50 {r['step_ms']['p50'] or 0:.1f} ms, errors {r['errors']}",
                flush=True,
            )
    return {
        "params": {
            "clients": levels,
            "steps_per_client": args.steps,
            "warmup_steps": WARMUP_STEPS,
            "batch_size": BATCH,
            "max_length": SEQ,
            "transport_dtype": cfg.transport.dtype,
            "split": [split.head_blocks, split.tail_blocks],
            "max_requests": args.max_requests,
            "requests_planned": requests_planned,
            "max_level_s": args.max_level_s,
            "request_timeout_s": args.request_timeout_s,
        },
        "levels": results,
    }
