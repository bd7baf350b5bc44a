"""Run configuration: one validated record, loaded from YAML, mapped onto the params dataclasses.

Every field has a documented default; unknown fields are rejected with a clear message so a
typo in a config file never silently falls back to a default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from elsa.errors import ConfigError
from elsa.params import LoraParams, PartitionParams, SplitParams, TrainParams, TransportParams


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
    """How many edges and devices."""

    edges: int = Field(2, ge=1)
    devices_per_edge: int = Field(3, ge=1)


class TrainSection(_Section):
    """Optimisation and round structure (tau1 = local_steps, tau2 = edge_rounds)."""

    learning_rate: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(16, ge=1)
    max_length: int = Field(64, ge=2)
    local_steps: int = Field(5, ge=1)
    edge_rounds: int = Field(2, ge=1)
    cloud_rounds: int = Field(3, ge=1)


class TransportSection(_Section):
    """Cut-tensor dtype on the wire."""

    dtype: Literal["fp32", "fp16", "bf16"] = "fp16"


class RunConfig(_Section):
    """A whole fine-tuning run."""

    name: str = "default"
    seed: int = 0
    model: ModelSection = ModelSection()
    data: DataSection = DataSection()
    topology: TopologySection = TopologySection()
    train: TrainSection = TrainSection()
    transport: TransportSection = TransportSection()

    @property
    def num_devices(self) -> int:
        """Total devices = edges x devices_per_edge."""
        return self.topology.edges * self.topology.devices_per_edge

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
