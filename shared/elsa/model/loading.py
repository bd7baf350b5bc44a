"""Loading a task model (sequence classification or causal LM) with LoRA applied (DESIGN §4).

The loaded :class:`TaskModel` is the *monolithic* reference: one Hugging Face model wrapped by
peft. :mod:`elsa.model.split` cuts it into segments that share its modules, so the frozen base
weights exist once per process however many simulated devices use them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedTokenizerBase,
)

from elsa.errors import ModelError
from elsa.model.families import Family, family_for
from elsa.params import LoraParams, Task


@dataclass
class TaskModel:
    """A peft-wrapped task model plus what splitting needs to know about it."""

    peft_model: PeftModel
    tokenizer: PreTrainedTokenizerBase | None
    family: Family
    task: Task
    num_labels: int | None
    lora: LoraParams

    @property
    def hf_model(self) -> Any:
        """The underlying transformers model (LoRA layers injected in place)."""
        return self.peft_model.base_model.model  # type: ignore[no-any-return]

    @property
    def num_blocks(self) -> int:
        """Number of transformer blocks L."""
        return len(self.family.blocks(self.hf_model))

    @property
    def pad_token_id(self) -> int | None:
        """Padding token id used for last-token pooling (decoders)."""
        value = getattr(self.hf_model.config, "pad_token_id", None)
        return int(value) if value is not None else None

    @property
    def hidden_size(self) -> int:
        """Width d of the hidden states at every cut."""
        return int(self.hf_model.config.hidden_size)


def lora_config(family: Family, task: Task, params: LoraParams) -> LoraConfig:
    """The peft LoraConfig for a family/task (targets only linear layers inside blocks)."""
    target: str | list[str] = family.lora_target_regex
    if params.target_modules is not None:
        names = "|".join(params.target_modules)
        target = rf".*\.{_blocks_attr(family)}\.\d+\..*({names})"
    return LoraConfig(
        r=params.rank,
        lora_alpha=params.alpha,  # type: ignore[arg-type]  # peft accepts floats
        lora_dropout=params.dropout,
        target_modules=target,
        modules_to_save=list(family.task_head_modules.get(task, ())) or None,
        fan_in_fan_out=family.fan_in_fan_out,
        bias="none",
    )


def _blocks_attr(family: Family) -> str:
    return {"bert": "layer", "llama": "layers", "gpt2": "h"}[family.name]


def wrap_with_lora(
    hf_model: Any,
    tokenizer: PreTrainedTokenizerBase | None,
    task: Task,
    lora: LoraParams,
    seed: int,
) -> TaskModel:
    """Apply LoRA to an in-memory transformers model and initialise trainables from ``seed``.

    LoRA A factors get peft's Kaiming-uniform init and the task head a normal(0, 0.02) init, both
    drawn from a ``torch.Generator(seed)`` (never the global RNG); LoRA B starts at zero, so the
    adapted model initially equals the base model. The model is put in eval mode: ELSA trains
    without dropout so that split and monolithic steps are bit-for-bit comparable.
    """
    family = family_for(str(hf_model.config.model_type))
    if task not in family.task_head_modules:
        raise ModelError(f"task {task!r} is not supported for {family.name} models")
    peft_model = get_peft_model(hf_model, lora_config(family, task, lora))  # type: ignore[arg-type]
    peft_model.eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(peft_model.named_parameters()):
            if not param.requires_grad:
                continue
            if ".lora_A." in name:
                bound = 1.0 / math.sqrt(param.shape[1])
                param.copy_(torch.rand(param.shape, generator=generator) * 2 * bound - bound)
            elif ".lora_B." in name or name.endswith("bias"):
                param.zero_()
            else:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.02)
    num_labels = int(hf_model.config.num_labels) if task == "classification" else None
    return TaskModel(peft_model, tokenizer, family, task, num_labels, lora)


def load_task_model(
    model_dir: Path,
    task: Task,
    *,
    num_labels: int | None = None,
    lora: LoraParams | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> TaskModel:
    """Load a local Hugging Face model directory as a LoRA-wrapped task model.

    ``task="classification"`` needs ``num_labels``; a fresh task head is initialised from
    ``seed``. Decoders get ``pad_token_id`` = the tokenizer's pad (or EOS) token so that batches
    can be right-padded and pooled at the last real token. Nothing is downloaded.
    """
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise ModelError(f"{model_dir} is not a model directory (no config.json)")
    config = AutoConfig.from_pretrained(model_dir)
    family_for(str(config.model_type))  # fail early with a clear error
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    kwargs: dict[str, Any] = {"dtype": dtype, "pad_token_id": tokenizer.pad_token_id}
    if task == "classification":
        if num_labels is None or num_labels < 2:
            raise ModelError(f"classification needs num_labels >= 2, got {num_labels}")
        hf_model = AutoModelForSequenceClassification.from_pretrained(
            model_dir, num_labels=num_labels, **kwargs
        )
    elif task == "causal_lm":
        hf_model = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
    else:
        raise ModelError(f"unknown task {task!r}")
    return wrap_with_lora(hf_model, tokenizer, task, lora or LoraParams(), seed)
