"""Global adapter versions on disk (DESIGN §2.9, §5): PEFT directory + ELSA-keyed weights.

``<adapter_dir>/<run_id>/v<version>/`` holds ``adapter_config.json`` and
``adapter_model.safetensors`` (standard PEFT, loadable on the unsplit model) plus
``elsa_state.safetensors`` (the same tensors under ELSA's global-block keys, served to nodes)
and ``delta.msgpack`` (the merged count sketch that made this version from the previous one,
an ``AdapterBroadcast`` that nodes holding the previous version apply instead of downloading the
whole adapter). The PEFT weights' sha256 is recorded in SQL and verified on read.

Every run's model (initial adapter, adapter shapes, SS-OP subspaces) is loaded once per cloud
process by :func:`run_model`.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from elsa.errors import ConflictError, NotFoundError
from elsa.model.packaged import model_type_of
from elsa.model.peft_format import ADAPTER_FILE, file_sha256, write_peft_dir
from elsa.model.split import SplitModel
from elsa.runtime.config import RunConfig
from elsa.runtime.privacy import RunPrivacy
from elsa.runtime.probing import load_probes
from elsa.runtime.simulation import load_run_model
from elsa_cloud.state import CloudState

ELSA_FILE = "elsa_state.safetensors"
DELTA_FILE = "delta.msgpack"


def version_dir(root: Path, run_id: str, version: int) -> Path:
    """Folder of one version."""
    return root / run_id / f"v{version}"


def save_version(
    root: Path, run_id: str, version: int, state: Mapping[str, torch.Tensor], config: RunConfig
) -> tuple[Path, str, int]:
    """Write a version atomically (temp folder + rename); returns (folder, sha256, bytes)."""
    final = version_dir(root, run_id, version)
    tmp = final.with_name(final.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    tensors = {k: v.detach().to(torch.float32).contiguous() for k, v in state.items()}
    save_file(tensors, str(tmp / ELSA_FILE))
    model_type = _model_type(config)
    digest = write_peft_dir(
        tensors,
        tmp,
        model_type=model_type,
        task=config.model.task,
        lora=config.lora_params(),
        base_model=config.model.name,
    )
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    return final, digest, (final / ADAPTER_FILE).stat().st_size


def load_version(root: Path, run_id: str, version: int, sha256: str) -> dict[str, torch.Tensor]:
    """ELSA-keyed tensors of a stored version, after checking the PEFT weights' checksum."""
    folder = version_dir(root, run_id, version)
    if not (folder / ELSA_FILE).is_file():
        raise NotFoundError(f"adapter version {version} of run {run_id} is missing on disk")
    if file_sha256(folder / ADAPTER_FILE) != sha256:
        raise ConflictError(f"adapter version {version} of run {run_id} fails its checksum")
    return load_file(str(folder / ELSA_FILE))


def _model_type(config: RunConfig) -> str:
    return model_type_of(config.model.name)


async def global_state(
    state: CloudState, adapter_dir: Path, run_id: str, version: int
) -> dict[str, torch.Tensor]:
    """A global adapter version's tensors (cached in memory after the first checked load)."""
    cached = state.adapter_cache.get((run_id, version))
    if cached is not None:
        return cached
    record = await state.store.get_adapter_version(run_id, version)
    if record is None:
        raise NotFoundError(f"run {run_id} has no adapter version {version}")
    loaded = await asyncio.to_thread(load_version, adapter_dir, run_id, version, record.sha256)
    state.adapter_cache[(run_id, version)] = loaded
    return loaded


def save_delta(root: Path, run_id: str, version: int, message: bytes) -> None:
    """Store the encoded merged-sketch broadcast of a version (after :func:`save_version`)."""
    folder = version_dir(root, run_id, version)
    tmp = folder / (DELTA_FILE + ".tmp")
    tmp.write_bytes(message)
    tmp.replace(folder / DELTA_FILE)


def load_delta(root: Path, run_id: str, version: int) -> bytes:
    """The encoded merged-sketch broadcast of a version (NotFoundError when there is none)."""
    path = version_dir(root, run_id, version) / DELTA_FILE
    if not path.is_file():
        raise NotFoundError(f"adapter version {version} of run {run_id} has no sketched delta")
    return path.read_bytes()


async def run_model(state: CloudState, run_id: str, config: RunConfig) -> tuple[SplitModel, RunPrivacy]:
    """The run's model (initial adapter = version 0, adapter shapes) and its SS-OP subspaces,
    loaded once per process (in a worker thread: it takes seconds)."""
    cached = state.models.get(run_id)
    if cached is None:

        def load() -> tuple[SplitModel, RunPrivacy]:
            model = load_run_model(config, config.resolved_num_labels())
            return model, RunPrivacy(model, load_probes(model, config), config)

        cached = await asyncio.to_thread(load)
        state.models[run_id] = cached
    return cached


async def start_model(
    state: CloudState, adapter_dir: Path, run_id: str, config: RunConfig, version: int
) -> dict[str, torch.Tensor]:
    """The full global adapter of ``version`` (0 = the run's initial adapter)."""
    model, _ = await run_model(state, run_id, config)
    initial = model.initial_state()
    if version == 0:
        return initial
    return {**initial, **await global_state(state, adapter_dir, run_id, version)}
