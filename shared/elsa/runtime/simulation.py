"""The simulation runtime (DESIGN §6): devices, edges and a cloud in one process.

The same steppers, wire codec and aggregation as the services, wired through the in-memory
transport. Round structure (DESIGN §2): each cloud round = ``edge_rounds`` edge rounds; each
edge round = ``local_steps`` split-training steps per device, then edge aggregation; after the
last edge round the cloud aggregates the edge models (example-weighted) into a new global
adapter version, and evaluates it on the held-out split.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from elsa.aggregate import weighted_mean
from elsa.data import TextDataset, dirichlet_partition, load_dataset, train_test_split
from elsa.model.adapters import AdapterState, select, state_numel
from elsa.model.evaluate import evaluate_state
from elsa.model.loading import TaskModel, load_task_model
from elsa.model.packaged import resolve_model_dir
from elsa.model.split import SplitModel
from elsa.model.tokenize import causal_lm_labels, encode_texts
from elsa.model.training import DeviceStepper
from elsa.runtime.config import RunConfig
from elsa.runtime.nodes import DeviceData, SimDevice, SimEdge, aggregate_edge
from elsa.runtime.transport import (
    ADAPTERS_DOWN,
    CLOUD_TO_EDGE,
    EDGE_TO_CLOUD,
    ByteCounter,
    InMemoryCutLink,
    ship_adapter,
)

#: progress callback: (event name, fields)
EventSink = Callable[[str, dict[str, Any]], None]


@dataclass
class RoundMetrics:
    """What one cloud round produced."""

    cloud_round: int
    train_loss: float | None
    test_loss: float
    test_accuracy: float | None
    bytes: dict[str, int]
    wall_s: float


@dataclass
class RunResult:
    """The outcome of a simulated run."""

    run_id: str
    config: dict[str, Any]
    rounds: list[RoundMetrics]
    global_state: AdapterState = field(repr=False)
    adapter_numel: int
    wall_s: float

    def metrics_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no tensors)."""
        return {
            "run_id": self.run_id,
            "config": self.config,
            "adapter_numel": self.adapter_numel,
            "wall_s": self.wall_s,
            "rounds": [asdict(r) for r in self.rounds],
        }


def _tokenised(task_model: TaskModel, ds: TextDataset, max_length: int) -> DeviceData:
    if task_model.tokenizer is None:
        raise ValueError("the task model has no tokenizer")
    ids, mask = encode_texts(task_model.tokenizer, ds.texts, max_length)
    if task_model.task == "classification":
        labels = torch.as_tensor(np.asarray(ds.labels), dtype=torch.long)
    else:
        labels = causal_lm_labels(ids, mask)
    return DeviceData(ids, mask, labels)


class Simulation:
    """A whole run in one process. Build with :meth:`from_config`, then :meth:`run`."""

    def __init__(
        self,
        config: RunConfig,
        split_model: SplitModel,
        devices: list[SimDevice],
        edges: list[tuple[SimEdge, list[SimDevice]]],
        test_data: DeviceData,
        run_id: str,
        counter: ByteCounter,
    ) -> None:
        self.config = config
        self.split_model = split_model
        self.devices = devices
        self.edges = edges
        self.test_data = test_data
        self.run_id = run_id
        self.counter = counter
        self.global_state = split_model.initial_state()

    @classmethod
    def from_config(
        cls, config: RunConfig, *, run_id: str = "sim", dataset: TextDataset | None = None
    ) -> Simulation:
        """Load model and data, partition the training split, create devices and edges."""
        train = config.train_params()
        model_dir = resolve_model_dir(config.model.name)
        ds = dataset if dataset is not None else load_dataset(config.data.dataset)
        train_ds, test_ds = train_test_split(ds, config.data.test_fraction, config.seed)
        if config.data.max_train_examples is not None and len(train_ds) > config.data.max_train_examples:
            keep = np.random.default_rng(config.seed).permutation(len(train_ds))[
                : config.data.max_train_examples
            ]
            train_ds = train_ds.subset(np.sort(keep))
        if len(test_ds) > config.data.max_test_examples:
            keep = np.random.default_rng(config.seed + 1).permutation(len(test_ds))[
                : config.data.max_test_examples
            ]
            test_ds = test_ds.subset(np.sort(keep))
        task_model = load_task_model(
            model_dir,
            config.model.task,
            num_labels=ds.num_classes if config.model.task == "classification" else None,
            lora=config.lora_params(),
            seed=config.seed,
        )
        split_model = SplitModel(task_model)
        segments = split_model.segments(config.split_params())
        start = split_model.initial_state()
        parts = dirichlet_partition(np.asarray(train_ds.labels), config.partition_params())
        devices: list[SimDevice] = []
        for i, part in enumerate(parts):
            data = _tokenised(task_model, train_ds.subset(part), train.max_length)
            stepper = DeviceStepper.create(segments.head, segments.tail, start, train)
            devices.append(
                SimDevice(f"device-{i:03d}", data, segments, stepper, np.random.default_rng([config.seed, i]))
            )
        sim_edges: list[tuple[SimEdge, list[SimDevice]]] = []
        transport = config.transport_params()
        per = config.topology.devices_per_edge
        counter = ByteCounter()
        for e in range(config.topology.edges):
            edge = SimEdge(f"edge-{e}", train)
            members = devices[e * per : (e + 1) * per]
            for device in members:
                session = edge.open_session(device.device_id, segments, start)
                device.link = InMemoryCutLink(
                    f"{device.device_id}@{edge.edge_id}", session, transport, counter
                )
            sim_edges.append((edge, members))
        test_data = _tokenised(task_model, test_ds, train.max_length)
        return cls(config, split_model, devices, sim_edges, test_data, run_id, counter)

    def evaluate(self, state: AdapterState | None = None) -> dict[str, float]:
        """Loss (and accuracy) of ``state`` (default: the global model) on the held-out split."""
        d = self.test_data
        return evaluate_state(
            self.split_model,
            state if state is not None else self.global_state,
            d.input_ids,
            d.attention_mask,
            d.labels,
        )

    def run(self, on_event: EventSink | None = None) -> RunResult:
        """Run every cloud round; ``on_event`` receives progress events. Returns the result."""
        emit = on_event or (lambda _name, _fields: None)
        train = self.config.train_params()
        started = time.perf_counter()
        initial = self.evaluate()
        rounds = [RoundMetrics(0, None, initial["loss"], initial.get("accuracy"), {}, 0.0)]
        emit("evaluated", {"cloud_round": 0, **initial})
        step = 0
        for cloud_round in range(1, train.cloud_rounds + 1):
            round_started = time.perf_counter()
            self._broadcast_global(cloud_round)
            losses: list[float] = []
            edge_models: list[tuple[AdapterState, float]] = []
            for edge_round in range(1, train.edge_rounds + 1):
                for edge, members in self.edges:
                    for device in members:
                        device_losses = device.train_steps(train.local_steps, train.batch_size, step)
                        losses.extend(device_losses)
                        emit(
                            "device_trained",
                            {
                                "cloud_round": cloud_round,
                                "edge_round": edge_round,
                                "device": device.device_id,
                                "loss": float(np.mean(device_losses)),
                                "steps": train.local_steps,
                            },
                        )
                    step += train.local_steps
                    model, total = aggregate_edge(
                        edge, members, run_id=self.run_id, round_index=cloud_round, counter=self.counter
                    )
                    if edge_round == train.edge_rounds:
                        edge_models.append((model, float(total)))
                emit("edge_round_done", {"cloud_round": cloud_round, "edge_round": edge_round})
            uploaded: list[tuple[AdapterState, float]] = []
            for (edge, _members), (edge_model, weight) in zip(self.edges, edge_models, strict=True):
                received, n = ship_adapter(
                    edge_model,
                    node_id=edge.edge_id,
                    run_id=self.run_id,
                    round_index=cloud_round,
                    num_examples=int(weight),
                    kind=EDGE_TO_CLOUD,
                    counter=self.counter,
                )
                uploaded.append((received, float(n)))
            self.global_state = weighted_mean(uploaded)
            metrics = self.evaluate()
            wall = time.perf_counter() - round_started
            result = RoundMetrics(
                cloud_round,
                float(np.mean(losses)),
                metrics["loss"],
                metrics.get("accuracy"),
                self.counter.snapshot_and_reset(),
                wall,
            )
            rounds.append(result)
            emit("cloud_round_done", asdict(result))
        return RunResult(
            run_id=self.run_id,
            config=self.config.model_dump(mode="json"),
            rounds=rounds,
            global_state=self.global_state,
            adapter_numel=state_numel(self.global_state),
            wall_s=time.perf_counter() - started,
        )

    def _broadcast_global(self, cloud_round: int) -> None:
        """Cloud -> edges -> devices/sessions: everyone starts the round from the global model."""
        for edge, members in self.edges:
            received, _ = ship_adapter(
                self.global_state,
                node_id="cloud",
                run_id=self.run_id,
                round_index=cloud_round,
                num_examples=0,
                kind=CLOUD_TO_EDGE,
                counter=self.counter,
            )
            edge.load_model(received)
            for device in members:
                down, _ = ship_adapter(
                    select(received, device.stepper.state.keys()),
                    node_id=edge.edge_id,
                    run_id=self.run_id,
                    round_index=cloud_round,
                    num_examples=0,
                    kind=ADAPTERS_DOWN,
                    counter=self.counter,
                )
                device.load_model(down)

    def export_adapter(self, out_dir: Path) -> Path:
        """Write the global adapter as a standard PEFT directory."""
        return self.split_model.export_peft(self.global_state, out_dir)
