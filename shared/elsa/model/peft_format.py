"""Writing an ELSA adapter state as a standard PEFT adapter directory without the model.

The cloud never runs (or loads) the model, yet stores every global adapter version in PEFT
format (DESIGN §2.9, §5). Adapter keys are global (``blocks.<i>.<path>``, ``final.<m>.<p>``), so
the PEFT names follow from the model family alone. The result is byte-for-byte what
``PeftModel.save_pretrained`` writes for the same state (a test).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import save_file

from elsa.errors import AdapterMismatchError, UnsupportedArchitectureError
from elsa.model.adapters import block_index
from elsa.model.families import family_for
from elsa.model.loading import lora_config
from elsa.params import LoraParams, Task

#: model_type -> attribute path of the block list inside the task model
_BLOCK_PATHS = {
    "bert": "bert.encoder.layer",
    "roberta": "roberta.encoder.layer",
    "xlm-roberta": "roberta.encoder.layer",
    "electra": "electra.encoder.layer",
    "llama": "model.layers",
    "mistral": "model.layers",
    "qwen2": "model.layers",
    "gpt2": "transformer.h",
}
#: (family, final-module short name) -> module path inside the task model
_FINAL_PATHS = {("bert", "classifier"): "classifier", ("llama", "head"): "score", ("gpt2", "head"): "score"}

ADAPTER_FILE = "adapter_model.safetensors"


def peft_key(model_type: str, key: str) -> str:
    """ELSA adapter key -> the key PEFT stores in ``adapter_model.safetensors``."""
    family = family_for(model_type)
    index = block_index(key)
    if index is not None:
        rest = key.split(".", 2)[2]
        return f"base_model.model.{_BLOCK_PATHS[model_type]}.{index}.{rest}"
    parts = key.split(".")
    if len(parts) != 3 or parts[0] != "final" or (family.name, parts[1]) not in _FINAL_PATHS:
        raise AdapterMismatchError(f"adapter key {key!r} has no PEFT name for {model_type} models")
    return f"base_model.model.{_FINAL_PATHS[(family.name, parts[1])]}.{parts[2]}"


def write_peft_dir(
    state: Mapping[str, torch.Tensor],
    out_dir: Path,
    *,
    model_type: str,
    task: Task,
    lora: LoraParams,
    base_model: str,
) -> str:
    """Write ``state`` as a PEFT adapter directory; returns the sha256 of the weights file.

    ``base_model`` goes into ``adapter_config.json`` as ``base_model_name_or_path``. The input
    state is not mutated. UnsupportedArchitectureError for unknown model types.
    """
    if model_type not in _BLOCK_PATHS:
        raise UnsupportedArchitectureError(f"no PEFT layout for model_type {model_type!r}")
    family = family_for(model_type)
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = {peft_key(model_type, k): v.detach().to(torch.float32).contiguous() for k, v in state.items()}
    save_file(tensors, str(out_dir / ADAPTER_FILE), metadata={"format": "pt"})
    config = lora_config(family, task, lora)
    config.base_model_name_or_path = base_model
    config.inference_mode = True
    config.save_pretrained(str(out_dir))
    return file_sha256(out_dir / ADAPTER_FILE)


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
