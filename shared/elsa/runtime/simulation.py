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

from elsa.data import TextDataset, dirichlet_partition, load_dataset, train_test_split
from elsa.errors import ConfigError
from elsa.model.adapters import AdapterState, select, state_numel
from elsa.model.evaluate import evaluate_state
from elsa.model.loading import TaskModel, load_task_model
from elsa.model.packaged import resolve_model_dir
from elsa.model.split import SplitModel
from elsa.model.tokenize import causal_lm_labels, encode_texts
from elsa.model.training import DeviceStepper
from elsa.runtime.config import RunConfig
from elsa.runtime.control import (
    ControlPlane,
    DeviceProfile,
    ModelProfile,
    ProbeResult,
    probe_message,
    probe_result,
)
from elsa.runtime.exchange import (
    DeltaSender,
    broadcast_message,
    read_broadcast,
    read_update,
    update_message,
)
from elsa.runtime.memory import limit_heap_retention
from elsa.runtime.nodes import DeviceData, DeviceNode
from elsa.runtime.privacy import RunPrivacy, derived_seed
from elsa.runtime.probing import load_probes, probe_report, public_basis
from elsa.runtime.profile import emulated_profiles, measure_block_step_s, model_profile
from elsa.runtime.rounds import EXACT, EdgeRound, aggregate_edges
from elsa.runtime.transport import (
    ADAPTERS_DOWN,
    ADAPTERS_UP,
    CLOUD_TO_DEVICE,
    CLOUD_TO_EDGE,
    EDGE_TO_CLOUD,
    PROBE_REPORTS,
    ByteCounter,
    InMemoryCutLink,
    LocalCutLink,
    ship,
)
from elsa.sketch import SketchedState, sketch_state, weighted_sum
from elsa.wire import AdapterBroadcast, ProbeReport, encode

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
    #: emulated device-edge communication time of the slowest edge (topology link model)
    comm_s: float = 0.0
    #: control-plane state after the round: clusters, trust, quarantined, assignment, split plans
    control: dict[str, Any] = field(default_factory=dict)
    #: devices that took part (``faults.dropout`` leaves some out)
    participants: int = 0


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


def tokenise_dataset(task_model: TaskModel, ds: TextDataset, max_length: int) -> DeviceData:
    """Tokenise a dataset on the device that owns it (labels per task)."""
    if task_model.tokenizer is None:
        raise ConfigError("the task model has no tokenizer")
    ids, mask = encode_texts(task_model.tokenizer, ds.texts, max_length)
    if task_model.task == "classification":
        labels = torch.tensor(np.asarray(ds.labels), dtype=torch.long)
    else:
        labels = causal_lm_labels(ids, mask)
    return DeviceData(ids, mask, labels)


def prepare_data(
    config: RunConfig, dataset: TextDataset | None = None
) -> tuple[list[TextDataset], TextDataset]:
    """Training partitions (one per device, in device order) and the capped held-out split.

    Deterministic for the config's seed, so every process (simulator, device agents) derives
    the same partition locally; a device agent keeps only its own part.
    """
    ds = dataset if dataset is not None else load_dataset(config.data.dataset)
    train_ds, test_ds = train_test_split(ds, config.data.test_fraction, config.seed)
    if config.data.max_train_examples is not None and len(train_ds) > config.data.max_train_examples:
        keep = np.random.default_rng(config.seed).permutation(len(train_ds))[: config.data.max_train_examples]
        train_ds = train_ds.subset(np.sort(keep))
    if len(test_ds) > config.data.max_test_examples:
        keep = np.random.default_rng(config.seed + 1).permutation(len(test_ds))[
            : config.data.max_test_examples
        ]
        test_ds = test_ds.subset(np.sort(keep))
    parts = dirichlet_partition(np.asarray(train_ds.labels), config.partition_params())
    return [train_ds.subset(p) for p in parts], test_ds


def load_run_model(config: RunConfig, num_labels: int | None) -> SplitModel:
    """The run's model with LoRA, initialised from the run seed (identical on every node)."""
    task_model = load_task_model(
        resolve_model_dir(config.model.name),
        config.model.task,
        num_labels=num_labels if config.model.task == "classification" else None,
        lora=config.lora_params(),
        seed=config.seed,
    )
    return SplitModel(task_model)


def make_device(
    config: RunConfig,
    model: SplitModel,
    index: int,
    part: TextDataset,
    start: AdapterState,
    privacy: RunPrivacy | None = None,
) -> DeviceNode:
    """The device with partition ``index``: tokenised data, steppers, its batch RNG, its update
    sender (sketch + error feedback) and, with ``privacy``, the SS-OP of its cut."""
    segments = model.segments(config.split_params())
    data = tokenise_dataset(model.task_model, part, config.train.max_length)
    if index in config.faults.label_flip and model.task_model.num_labels:
        data.labels = (data.labels + 1) % model.task_model.num_labels
    outgoing = privacy.noise(segments.split.head_blocks, index) if privacy is not None else None
    stepper = DeviceStepper.create(segments.head, segments.tail, start, config.train_params(), outgoing)
    reproducible = config.privacy.noise_seed == "run"
    return DeviceNode(
        device_name(index),
        data,
        segments,
        stepper,
        np.random.default_rng([config.seed, index]),
        noise_scale=config.faults.noise_scale if index in config.faults.noise else 0.0,
        sender=DeltaSender(config, derived_seed(config.seed, index, 1) if reproducible else None),
    )


def device_name(index: int) -> str:
    """Canonical name of the device holding partition ``index``."""
    return f"device-{index:03d}"


class Simulation:
    """A whole run in one process. Build with :meth:`from_config`, then :meth:`run`."""

    def __init__(
        self,
        config: RunConfig,
        split_model: SplitModel,
        devices: list[DeviceNode],
        edges: list[str],
        test_data: DeviceData,
        run_id: str,
        counter: ByteCounter,
        probes: DeviceData,
        basis: np.ndarray,
        profiles: dict[str, DeviceProfile],
        model: ModelProfile,
        privacy: RunPrivacy,
    ) -> None:
        self.config = config
        self.split_model = split_model
        self.devices = devices
        self.edges = edges
        self.test_data = test_data
        self.run_id = run_id
        self.counter = counter
        #: edge<->cloud messages: inside the one server of a one-tier strategy, so not counted there
        self.upper_counter = counter if config.strategy.tiers == 2 else ByteCounter()
        self.global_state = split_model.initial_state()
        #: the global model before the last aggregation and the merged sketch that updated it
        self.previous_global = self.global_state
        self.global_delta: SketchedState | None = None
        self.edge_senders = {e: DeltaSender(config, perturb=False) for e in edges}
        self.privacy = privacy
        self.control = ControlPlane(config)
        self.probes = probes
        self.basis = basis
        self.profiles = profiles
        self.model_profile = model
        #: emulated edges: ``edge_speedup`` times a reference (speed 1.0) device per block
        self.edge_block_step_s: float | None = None

    @classmethod
    def from_config(
        cls, config: RunConfig, *, run_id: str = "sim", dataset: TextDataset | None = None
    ) -> Simulation:
        """Load model and data, partition the training split, create devices and edges.

        Also tokenises the public probe set, derives the public fingerprint basis, measures one
        block's step time on this machine and builds the emulated device/link profiles.
        Lowers the C heap's mmap threshold for this process (see :mod:`elsa.runtime.memory`) so
        that simulated devices cost their adapters and optimizer state, not retained activations.
        """
        limit_heap_retention()
        parts, test_ds = prepare_data(config, dataset)
        split_model = load_run_model(config, test_ds.num_classes)
        start = split_model.initial_state()
        probes = load_probes(split_model, config)
        privacy = RunPrivacy(split_model, probes, config)
        devices = [make_device(config, split_model, i, part, start, privacy) for i, part in enumerate(parts)]
        edges = [f"edge-{e}" for e in range(config.topology.edges)]
        test_data = tokenise_dataset(split_model.task_model, test_ds, config.train.max_length)
        basis = public_basis(split_model, devices[0], probes, config)
        block_s = measure_block_step_s(split_model, config)
        profiles = emulated_profiles(config, [d.device_id for d in devices], edges, block_s)
        model = model_profile(split_model, config)
        sim = cls(
            config,
            split_model,
            devices,
            edges,
            test_data,
            run_id,
            ByteCounter(),
            probes,
            basis,
            profiles,
            model,
            privacy,
        )
        sim.edge_block_step_s = block_s / config.control.edge_speedup
        return sim

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

    def _global_broadcast(self, cloud_round: int, kind: str) -> AdapterState:
        """The round's start model as a node receives it: the merged sketch of the last cloud
        aggregation applied to the previous global model (round 1: the initial adapter)."""
        version = cloud_round - 1
        message = broadcast_message(
            dtype=self.config.sketch_params().table_dtype,
            run_id=self.run_id,
            round_index=version,
            version=version,
            sketches=self.global_delta,
            base_version=version - 1,
        )
        got = ship(message, kind, self.upper_counter if kind == CLOUD_TO_EDGE else self.counter)
        return read_broadcast(got, self.previous_global, self.config.sketch_params(), self.config.seed)

    def plan_round(self) -> dict[str, list[DeviceNode]]:
        """Assignment and split plans for the next cloud round (DESIGN §2.2, §2.6)."""
        names = [d.device_id for d in self.devices]
        capacity = dict.fromkeys(self.edges, self.config.topology.devices_per_edge)
        assignment = self.control.assign(names, capacity, self.profiles, self.model_profile)
        members: dict[str, list[DeviceNode]] = {e: [] for e in self.edges}
        train = self.config.train_params()
        for device in self.devices:
            split = self.control.plan(
                device.device_id,
                self.profiles.get(device.device_id),
                self.model_profile,
                self.edge_block_step_s,
            )
            if split != device.segments.split:
                index = self.devices.index(device)
                outgoing = self.privacy.noise(split.head_blocks, index)
                device.resplit(self.split_model.segments(split), self.global_state, train, outgoing)
            members[assignment[device.device_id]].append(device)
        return {e: m for e, m in members.items() if m}

    def present(self, cloud_round: int) -> set[str]:
        """The devices taking part in ``cloud_round``: with ``faults.dropout`` = p each misses it
        with probability p (seeded by run seed and round, identical for every strategy); at least
        one stays."""
        names = [d.device_id for d in self.devices]
        p = self.config.faults.dropout
        if p <= 0:
            return set(names)
        rng = np.random.default_rng([self.config.seed, cloud_round, 0xD0])
        missing = rng.random(len(names)) < p
        if missing.all():
            missing[int(rng.integers(len(names)))] = False
        return {n for n, gone in zip(names, missing, strict=True) if not gone}

    def _count_body(self, er: EdgeRound, device: DeviceNode, cloud_round: int, kind: str) -> None:
        """``strategy.split: false``: the body adapters a device trains travel with its update
        (delta, exact fp32 tables) and come back in the edge's broadcast (values). The edge
        aggregates the same values from the in-process session; this counts their bytes."""
        session = er.session(device.device_id)
        if kind == ADAPTERS_UP:
            base = er.latest(er.cluster(device.device_id))
            delta = {k: v.detach() - base[k] for k, v in session.state.items()}
            update = update_message(
                sketch_state(delta, EXACT, cloud_round, self.config.seed),
                node_id=device.device_id,
                run_id=self.run_id,
                round_index=cloud_round,
                num_examples=device.num_examples,
            )
            self.counter.add(kind, len(encode(update)))
        else:
            model = er.latest(er.cluster(device.device_id))
            values = {k: model[k] for k in session.state}
            down = broadcast_message(run_id=self.run_id, round_index=cloud_round, version=0, values=values)
            self.counter.add(kind, len(encode(down)))

    def _ship_probes(self, result: ProbeResult, node_id: str, round_index: int) -> ProbeResult:
        """A probe report through the wire codec, exactly as a device agent sends it."""
        got: ProbeReport = ship(
            probe_message(result, node_id, self.run_id, round_index), PROBE_REPORTS, self.counter
        )
        return probe_result(got, self.config.control.num_probes, self.config.control.basis_dim)

    def run_cloud_round(self, cloud_round: int, emit: EventSink) -> tuple[list[float], float]:
        """One cloud round (DESIGN §2). Returns the losses and the emulated communication time.

        Broadcast, tau2 edge rounds of tau1 steps with per-cluster, trust-weighted edge
        aggregation, cloud aggregation, then the control plane observes the probe reports
        (clusters, trust) for the next round. Devices probe after the first edge round's local
        training: their own model from the round's start, before edge aggregation mixes it
        with their peers' (so a hostile device cannot hide behind them, nor taint them).
        """
        train = self.config.train_params()
        transport = self.config.transport_params()
        split, tiers = self.config.strategy.split, self.config.strategy.tiers
        present = self.present(cloud_round)
        edges = {
            e: kept
            for e, members in self.plan_round().items()
            if (kept := [d for d in members if d.device_id in present])
        }
        fingerprint = self.control.fingerprint_round(cloud_round)
        probing = self.config.control.trust or self.config.control.clustering
        losses: list[float] = []
        rounds: dict[str, EdgeRound] = {}
        links: dict[str, list[InMemoryCutLink | LocalCutLink]] = {}
        params, seed = self.config.sketch_params(), self.config.seed
        for edge_id, members in edges.items():
            er = EdgeRound(
                self.run_id,
                cloud_round,
                tuple(d.device_id for d in members),
                self._global_broadcast(cloud_round, CLOUD_TO_EDGE),
                train,
                clusters={d.device_id: self.control.cluster_of(d.device_id) for d in members},
                trust={d.device_id: self.control.weight(d.device_id, 1) for d in members},
                sketch=params,
                seed=seed,
                norm_bound=self.config.control.norm_bound,
            )
            for device in members:
                device.start_round(self._global_broadcast(cloud_round, CLOUD_TO_DEVICE))
                session = er.open_session(device.device_id, device.segments)
                link = self.profiles[device.device_id].links[edge_id]
                device.link = (
                    InMemoryCutLink(
                        f"{device.device_id}@{edge_id}",
                        session,
                        transport,
                        self.counter,
                        rtt_s=link.rtt_s,
                        throughput_bytes_per_s=link.throughput_bytes_per_s,
                    )
                    if split
                    else LocalCutLink(session)
                )
                links.setdefault(edge_id, []).append(device.link)
            rounds[edge_id] = er
        reports: dict[str, ProbeResult] = {}
        for edge_round in range(train.edge_rounds):
            for edge_id, members in edges.items():
                er = rounds[edge_id]
                for device in members:
                    step0 = ((cloud_round - 1) * train.edge_rounds + edge_round) * train.local_steps
                    device_losses = device.train_steps(train.local_steps, train.batch_size, step0)
                    losses.extend(device_losses)
                    if edge_round == 0 and probing:  # the device's own training, before any mixing
                        result = probe_report(
                            device, self.probes, self.basis, self.config, fingerprint=fingerprint
                        )
                        reports[device.device_id] = self._ship_probes(result, device.device_id, cloud_round)
                    message = update_message(
                        device.make_update(cloud_round),
                        dtype=self.config.sketch_params().table_dtype,
                        node_id=device.device_id,
                        run_id=self.run_id,
                        round_index=cloud_round,
                        num_examples=device.num_examples,
                    )
                    got = ship(message, ADAPTERS_UP, self.counter)
                    delta = read_update(got, er.start, self.config, keys=device.keys)
                    er.submit(device.device_id, edge_round, delta, got.num_examples)
                    if not split:
                        self._count_body(er, device, cloud_round, ADAPTERS_UP)
                    emit(
                        "device_trained",
                        {
                            "cloud_round": cloud_round,
                            "edge_round": edge_round + 1,
                            "device": device.device_id,
                            "loss": float(np.mean(device_losses)),
                        },
                    )
                er.aggregate(edge_round)
                # one tier: the edge's model is the next global model, which the device receives
                # at the start of the next round (no separate edge broadcast)
                for device in members if tiers == 2 else []:
                    if not split:
                        self._count_body(er, device, cloud_round, ADAPTERS_DOWN)
                    sketches, values = er.device_broadcast(device.device_id, edge_round, device.keys)
                    down: AdapterBroadcast = ship(
                        broadcast_message(
                            dtype=self.config.sketch_params().table_dtype,
                            run_id=self.run_id,
                            round_index=cloud_round,
                            version=edge_round,
                            sketches=sketches,
                            values=values,
                            base_version=cloud_round - 1,
                        ),
                        ADAPTERS_DOWN,
                        self.counter,
                    )
                    model = read_broadcast(down, device.round_start, params, seed)
                    device.load_model(select(model, device.keys))
            emit("edge_round_done", {"cloud_round": cloud_round, "edge_round": edge_round + 1})
        uploads: dict[str, tuple[SketchedState, float]] = {}
        for edge_id, er in rounds.items():
            uploads[edge_id] = self._upload_edge(edge_id, er)
        self.previous_global = self.global_state
        self.global_state, self.global_delta = aggregate_edges(uploads, self.global_state, params)
        observed = self.control.observe(reports)
        emit("control", {"cloud_round": cloud_round, **asdict(observed)})
        comm_s = max(sum(link.emulated_s for link in group) for group in links.values())
        return losses, comm_s

    def _upload_edge(self, edge_id: str, er: EdgeRound) -> tuple[SketchedState, float]:
        """An edge's upload as the cloud receives it: its merged cluster sketches plus the
        sketch (with the edge's error feedback) of its body deltas."""
        merged, exact, examples, weight = er.final_update()
        parts = [(merged, 1.0)] if merged else []
        if exact:
            parts.append((self.edge_senders[edge_id].compress(exact, er.round_index), 1.0))
        message = update_message(
            weighted_sum(parts) if parts else {},
            dtype=self.config.sketch_params().table_dtype,
            node_id=edge_id,
            run_id=self.run_id,
            round_index=er.round_index,
            num_examples=examples,
            weight=weight,
        )
        got = ship(message, EDGE_TO_CLOUD, self.upper_counter)
        return read_update(got, self.global_state, self.config), got.aggregation_weight

    def run(self, on_event: EventSink | None = None) -> RunResult:
        """Run every cloud round; ``on_event`` receives progress events. Returns the result."""
        emit: EventSink = on_event or (lambda _name, _fields: None)
        started = time.perf_counter()
        initial = self.evaluate()
        rounds = [RoundMetrics(0, None, initial["loss"], initial.get("accuracy"), {}, 0.0)]
        emit("evaluated", {"cloud_round": 0, **initial})
        for cloud_round in range(1, self.config.train.cloud_rounds + 1):
            round_started = time.perf_counter()
            participants = len(self.present(cloud_round))
            losses, comm_s = self.run_cloud_round(cloud_round, emit)
            metrics = self.evaluate()
            result = RoundMetrics(
                cloud_round,
                float(np.mean(losses)),
                metrics["loss"],
                metrics.get("accuracy"),
                self.counter.snapshot_and_reset(),
                time.perf_counter() - round_started,
                comm_s,
                self.control.snapshot(),
                participants,
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

    def export_adapter(self, out_dir: Path) -> Path:
        """Write the global adapter as a standard PEFT directory."""
        return self.split_model.export_peft(self.global_state, out_dir)
