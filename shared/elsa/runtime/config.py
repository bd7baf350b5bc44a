"""Run configuration: one validated record, loaded from YAML, mapped onto the params dataclasses.

Every field has a documented default; unknown fields are rejected with a clear message so a
typo in a config file never silently falls back to a default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from elsa.errors import ConfigError
from elsa.params import (
    AssignmentParams,
    ClusteringParams,
    FingerprintParams,
    LoraParams,
    PartitionParams,
    PerturbParams,
    SketchParams,
    SplitParams,
    TrainParams,
    TransportParams,
    TrustParams,
)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSection(_Section):
    """Which model, which task, LoRA and the default cut."""

    name: str = Field("minilm", description="'minilm', 'smollm2' or a local Hugging Face model directory")
    task: Literal["classification", "causal_lm"] = "classification"
    num_labels: int | None = Field(None, ge=2, description="classes; None = derived from the dataset")
    lora_rank: int = Field(8, ge=1)
    lora_alpha: float = Field(16.0, gt=0)
    lora_targets: tuple[str, ...] | None = Field(
        None, description="linear-layer names; None = family default"
    )
    head_blocks: int = Field(1, ge=1, description="h: blocks kept on the device before the edge body")
    tail_blocks: int = Field(1, ge=1, description="t: blocks kept on the device after the edge body")


class DataSection(_Section):
    """Dataset, held-out split and the non-IID partition across devices."""

    dataset: str = Field("bbc_news", description="'bbc_news', 'rotten_tomatoes' or a CSV/JSONL path")
    test_fraction: float = Field(0.2, gt=0, lt=1)
    max_test_examples: int = Field(400, ge=1, description="evaluation subsample of the test split")
    alpha: float | None = Field(0.5, gt=0, description="Dirichlet label-skew concentration; null = IID")
    quantity_sigma: float = Field(0.3, ge=0, description="log-normal sigma of per-device data size")
    max_train_examples: int | None = Field(None, ge=1, description="optional cap on the training split")


class TopologySection(_Section):
    """How many edges and devices, and (simulation runtime) the emulated devices and links.

    The emulated fields describe hardware the simulation cannot observe: each simulated device
    gets ``device_speed[i % len]`` (compute relative to this machine: 0.5 = twice as slow) and
    ``device_memory_mb[i % len]``; each device-edge link gets ``link_rtt_ms`` and
    ``link_mbps`` scaled by a seeded log-normal factor of sigma ``link_spread`` (0 = every link
    alike). The service runtime measures all of these instead.
    """

    edges: int = Field(2, ge=1)
    devices_per_edge: int = Field(3, ge=1)
    device_speed: tuple[float, ...] = Field((1.0,), min_length=1, description="relative compute per device")
    device_memory_mb: tuple[float, ...] | None = Field(
        None, min_length=1, description="memory budget per device (MB); null = unlimited"
    )
    link_rtt_ms: float = Field(2.0, ge=0, description="emulated device-edge round-trip time")
    link_mbps: float = Field(100.0, gt=0, description="emulated device-edge throughput (megabit/s)")
    link_spread: float = Field(0.0, ge=0, le=5, description="log-normal sigma of per-link variation")


class ControlSection(_Section):
    """The control plane (DESIGN §2.2-§2.6): fingerprints, clustering, trust, assignment, splits."""

    clustering: bool = Field(True, description="cluster devices by behavioural fingerprint")
    recluster_every: int = Field(1, ge=1, description="cloud rounds between fingerprint uploads")
    num_probes: int = Field(256, ge=2, le=4096, description="Q: public probe sentences")
    basis_dim: int = Field(32, ge=1, le=1024, description="k: dimension of the public probe basis")
    fingerprint_eps: float = Field(1e-3, gt=0, description="ridge added to fingerprint covariances")
    k_max: int = Field(4, ge=1, description="largest number of clusters")
    min_eigengap: float = Field(0.02, ge=0, le=2, description="eigengap a K >= 2 needs to be considered")
    min_within_affinity: float = Field(
        0.75, ge=0, le=1, description="mean within-cluster affinity to accept K"
    )
    trust: bool = Field(True, description="weight aggregation by prediction-consistency trust")
    trust_beta: float = Field(0.7, ge=0, lt=1, description="EMA factor: trust = beta*old + (1-beta)*evidence")
    tau_min: float = Field(
        0.75,
        ge=0,
        le=1,
        description="trust below this quarantines a device (0.75 with relative evidence: it agrees "
        "with its peers a quarter less than they agree with each other; ~0.5 suits absolute)",
    )
    trust_temperature: float = Field(
        0.05, gt=0, le=1, description="probe predictions are tempered p^(1/T) before JS (1 = raw)"
    )
    trust_singleton: Literal["trusted", "population"] = Field(
        "population", description="consensus for a device alone in its cluster"
    )
    norm_bound: float = Field(
        3.0,
        ge=0,
        description="edges scale each device's update to at most this multiple of the median update "
        "norm of the edge round (0 = off): a noise attacker's damage is bounded before trust catches it",
    )
    trust_evidence: Literal["relative", "absolute"] = Field(
        "relative",
        description="relative: evidence / median evidence of the cluster (an honest majority scores "
        "~1 however non-IID); absolute: 1 - mean JS as is",
    )
    assignment: Literal["latency", "balanced", "random"] = Field(
        "latency",
        description="latency: clusters to edges by measured link cost; balanced: devices spread in "
        "name order; random: a seeded random edge per device (baseline)",
    )
    edge_capacity: int = Field(16, ge=1, description="devices an edge serves when it reports no capacity")
    dynamic_split: bool = Field(True, description="plan (h, t) per device from its resources")
    edge_speedup: float = Field(4.0, gt=0, description="edge per-block compute relative to a device")


class FaultsSection(_Section):
    """Hostile devices for robustness studies (device indices; empty = all honest)."""

    label_flip: tuple[int, ...] = Field((), description="devices that train on permuted labels")
    noise: tuple[int, ...] = Field((), description="devices whose update is replaced by Gaussian noise")
    noise_scale: float = Field(20.0, gt=0, description="noise std relative to the RMS of the honest update")
    dropout: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="probability that a device misses a cloud round (seeded per round; it neither "
        "trains nor reports; at least one device stays)",
    )


class TrainSection(_Section):
    """Optimisation and round structure (tau1 = local_steps, tau2 = edge_rounds)."""

    learning_rate: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(16, ge=1)
    max_length: int = Field(64, ge=2)
    local_steps: int = Field(5, ge=1)
    edge_rounds: int = Field(2, ge=1)
    cloud_rounds: int = Field(3, ge=1, le=2**31 - 1, description="cloud rounds of the run (32-bit in SQL)")


class TransportSection(_Section):
    """Cut-tensor dtype on the wire."""

    dtype: Literal["fp32", "fp16", "bf16"] = "fp16"


class SketchSection(_Section):
    """Count sketches of adapter deltas on every adapter exchange (DESIGN §3)."""

    enabled: bool = Field(
        True, description="sketch adapter deltas; false = the same messages with exact (dense) tables"
    )
    compression: float = Field(8.0, ge=1, description="tensor elements per sketch cell (>= the byte ratio)")
    rows: int = Field(5, ge=1, le=64, description="hash rows per tensor")
    dense_below: int = Field(256, ge=0, description="tensors with fewer elements travel exactly")
    dtype: Literal["fp32", "fp16", "bf16"] = Field(
        "fp16", description="precision of sketch tables (rounded where made, so they travel exactly)"
    )
    estimator: Literal["mean", "median"] = Field(
        "mean", description="decoder; mean is unbiased and linear (merges decode like their parts)"
    )
    error_feedback: bool = Field(
        False,
        description="senders keep what a sketch loses and resend it (least-squares scaled); off by "
        "default: the mean decode is already unbiased and feedback delays updates by ~compression "
        "exchanges (bench/sketch_compression.py)",
    )


class PrivacySection(_Section):
    """SS-OP on device→edge activations and adapter deltas (DESIGN §3)."""

    kappa: float = Field(
        0.0,
        ge=0,
        description="noise scale relative to the RMS of the activations' orthogonal part; 0 = off (the "
        "default: at the first cut of MiniLM every kappa that keeps accuracy leaves token recovery at "
        "~100%, see bench/privacy_utility.py)",
    )
    rank: int = Field(16, ge=1, description="r: dimension of the semantic subspace at each cut")
    adapter_kappa: float = Field(
        0.0, ge=0, description="isotropic noise on adapter deltas before sketching, relative to their RMS"
    )
    noise_seed: Literal["random", "run"] = Field(
        "random",
        description="random: each device seeds its noise from OS entropy (nobody can regenerate it); "
        "run: from (run seed, device) for reproducible studies",
    )


class StrategySection(_Section):
    """Which system the run is (DESIGN §6): ELSA, or a baseline built from the same engine.

    The baselines of ``elsa.runtime.strategies`` differ from ELSA only in these switches and in
    the other sections (topology, round structure, control plane, sketches, SS-OP).
    """

    name: str = Field("elsa", description="label recorded with the results")
    split: bool = Field(
        True,
        description="false: each device holds the whole model (FedAvg/HierFL); no cut tensor leaves "
        "it and its body adapters travel with its updates (simulation runtime; exact adapters)",
    )
    tiers: Literal[1, 2] = Field(
        2,
        description="1: one aggregation server (FedAvg/SplitFed; one edge, edge_rounds 1): the "
        "edge-cloud hop is inside it and carries no bytes",
    )


class RunConfig(_Section):
    """A whole fine-tuning run."""

    name: str = "default"
    seed: int = 0
    model: ModelSection = ModelSection()
    data: DataSection = DataSection()
    topology: TopologySection = TopologySection()
    train: TrainSection = TrainSection()
    transport: TransportSection = TransportSection()
    control: ControlSection = ControlSection()
    faults: FaultsSection = FaultsSection()
    sketch: SketchSection = SketchSection()
    privacy: PrivacySection = PrivacySection()
    strategy: StrategySection = StrategySection()

    @model_validator(mode="after")
    def _check_strategy(self) -> RunConfig:
        if not self.strategy.split and self.sketch.enabled:
            raise ValueError("strategy.split false sends exact adapters: set sketch.enabled false")
        if not self.strategy.split and self.privacy.kappa > 0:
            raise ValueError("strategy.split false: no activation leaves a device, privacy.kappa must be 0")
        if self.strategy.tiers == 1 and (self.topology.edges != 1 or self.train.edge_rounds != 1):
            raise ValueError("strategy.tiers 1 needs topology.edges 1 and train.edge_rounds 1")
        return self

    @model_validator(mode="after")
    def _check_faults(self) -> RunConfig:
        bad = [i for i in (*self.faults.label_flip, *self.faults.noise) if not 0 <= i < self.num_devices]
        if bad:
            raise ValueError(f"faults name device indices outside [0, {self.num_devices}): {bad}")
        if self.faults.label_flip and self.model.task != "classification":
            raise ValueError("faults.label_flip needs a classification task")
        topo = self.topology
        if any(not v > 0 for v in (*topo.device_speed, *(topo.device_memory_mb or ()))):
            raise ValueError("topology.device_speed and device_memory_mb entries must be > 0")
        return self

    @property
    def num_devices(self) -> int:
        """Total devices = edges x devices_per_edge."""
        return self.topology.edges * self.topology.devices_per_edge

    def check_service_runtime(self) -> None:
        """ConfigError unless the services can run this config (baselines that move no cut
        tensors, one-tier aggregation and simulated dropout exist in the simulation runtime only)."""
        if not self.strategy.split or self.strategy.tiers != 2 or self.faults.dropout > 0:
            raise ConfigError(
                "config: strategy.split false, strategy.tiers 1 and faults.dropout are simulation-only "
                "(elsa simulate); the services run ELSA's split, two-tier protocol"
            )

    def resolved_num_labels(self) -> int | None:
        """Classes of the task head: explicit, or known for the packaged datasets."""
        if self.model.task != "classification":
            return None
        if self.model.num_labels is not None:
            return self.model.num_labels
        known = {"bbc_news": 5, "rotten_tomatoes": 2}
        if self.data.dataset in known:
            return known[self.data.dataset]
        raise ConfigError(f"model.num_labels is required for dataset {self.data.dataset!r}")

    def lora_params(self) -> LoraParams:
        """The LoRA parameters of this run."""
        return LoraParams(
            rank=self.model.lora_rank, alpha=self.model.lora_alpha, target_modules=self.model.lora_targets
        )

    def split_params(self) -> SplitParams:
        """The default cut of this run."""
        return SplitParams(head_blocks=self.model.head_blocks, tail_blocks=self.model.tail_blocks)

    def train_params(self) -> TrainParams:
        """Optimiser and round structure."""
        t = self.train
        return TrainParams(
            learning_rate=t.learning_rate,
            weight_decay=t.weight_decay,
            batch_size=t.batch_size,
            max_length=t.max_length,
            local_steps=t.local_steps,
            edge_rounds=t.edge_rounds,
            cloud_rounds=t.cloud_rounds,
        )

    def transport_params(self) -> TransportParams:
        """Wire dtype of cut tensors."""
        return TransportParams(dtype=self.transport.dtype)

    def fingerprint_params(self) -> FingerprintParams:
        """Probe set size, basis dimension and covariance ridge of fingerprints."""
        c = self.control
        return FingerprintParams(num_probes=c.num_probes, basis_dim=c.basis_dim, eps=c.fingerprint_eps)

    def clustering_params(self) -> ClusteringParams:
        """Spectral clustering of fingerprints, seeded by the run seed."""
        c = self.control
        return ClusteringParams(
            k_max=c.k_max,
            eps=c.fingerprint_eps,
            seed=self.seed,
            basis_dim=c.basis_dim,
            min_eigengap=c.min_eigengap,
            min_within_affinity=c.min_within_affinity,
        )

    def trust_params(self) -> TrustParams:
        """EMA trust and quarantine threshold."""
        return TrustParams(beta=self.control.trust_beta, tau_min=self.control.tau_min)

    def assignment_params(self) -> AssignmentParams:
        """Latency-aware edge assignment."""
        return AssignmentParams(default_edge_capacity=self.control.edge_capacity)

    def sketch_params(self) -> SketchParams:
        """Sketch geometry and decoder; with sketches off every tensor travels as an exact table."""
        s = self.sketch
        if not s.enabled:
            return SketchParams(rows=1, compression=1.0, dense_below=2**40, estimator="mean")
        return SketchParams(
            rows=s.rows,
            compression=s.compression,
            dense_below=s.dense_below,
            estimator=s.estimator,
            table_dtype=s.dtype,
        )

    def perturb_params(self) -> PerturbParams:
        """SS-OP strength and subspace rank."""
        p = self.privacy
        return PerturbParams(kappa=p.kappa, rank=p.rank, adapter_kappa=p.adapter_kappa)

    def partition_params(self) -> PartitionParams:
        """Non-IID partition of the training split across all devices."""
        return PartitionParams(
            num_parts=self.num_devices,
            alpha=self.data.alpha,
            quantity_sigma=self.data.quantity_sigma,
            seed=self.seed,
        )


def load_config(path: Path) -> RunConfig:
    """Read a YAML run config; ConfigError with the offending field on any problem."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    return parse_config(raw, source=str(path))


def parse_config(raw: object, source: str = "config") -> RunConfig:
    """Validate a mapping as a RunConfig; ConfigError listing every invalid field."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{source}: {problems}") from exc
