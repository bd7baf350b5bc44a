"""Per-architecture knowledge needed to cut a model into head / body / tail (DESIGN §1, §2.7).

A :class:`Family` knows, for one Hugging Face model family, where the embeddings, the list of
transformer blocks, the final norm and the task head live, how to rebuild each block's
attention context (padding mask, causal mask, rotary position embeddings) from the 2-D
attention mask alone, and which linear layers LoRA targets. Every segment rebuilds that
context locally, so only hidden states and the 2-D mask cross a cut.

Supported: BERT-family encoders (BERT, RoBERTa-like MiniLM), LLaMA-family decoders (LLaMA,
Mistral, Qwen2 — same block signature) and GPT-2-family decoders.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar, cast

import torch
from torch import nn
from transformers.masking_utils import create_bidirectional_mask, create_causal_mask

from elsa.errors import UnsupportedArchitectureError
from elsa.model.pooling import Pooling
from elsa.params import Task

#: transformers models are structured dynamically (attribute names differ per family), so the
#: family code treats them as ``Any`` and narrows at its return points.
HFModel = Any


@dataclass
class BlockContext:
    """What every block of a segment needs besides the hidden states.

    Built from the 2-D ``attention_mask`` (B x S, 1 = token, 0 = padding) by
    :meth:`Family.block_context`; never sent over the wire.
    """

    mask: Any
    position_ids: torch.Tensor | None = None
    position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None


class Family(ABC):
    """Base class: the structure of one model family. Stateless; one instance per family."""

    name: str = "base"
    #: architectures whose config ``model_type`` maps to this family
    model_types: tuple[str, ...] = ()
    #: regex (peft full-match) of the linear layers inside blocks that get LoRA
    lora_target_regex: str = ""
    #: task-head module names trained in full (peft ``modules_to_save``) per task
    task_head_modules: ClassVar[Mapping[str, tuple[str, ...]]] = MappingProxyType({})
    #: whether peft must treat the targets as Conv1D (fan_in_fan_out)
    fan_in_fan_out: bool = False
    #: how a sequence's final representation is pooled for fingerprints (DESIGN §2.3)
    pooling: Pooling = "mean"

    @abstractmethod
    def backbone(self, model: HFModel) -> HFModel:
        """The bare transformer inside a task model (``model.bert``, ``model.model``...)."""

    @abstractmethod
    def blocks(self, model: HFModel) -> nn.ModuleList:
        """The ordered transformer blocks of ``model``."""

    @abstractmethod
    def embeddings(self, model: HFModel) -> nn.Module:
        """A module holding the input embeddings (part of the head segment)."""

    @abstractmethod
    def embed(self, model: HFModel, input_ids: torch.Tensor) -> torch.Tensor:
        """Token ids (B x S, int64) -> block-0 input hidden states (B x S x d)."""

    @abstractmethod
    def block_context(
        self, model: HFModel, hidden: torch.Tensor, attention_mask: torch.Tensor
    ) -> BlockContext:
        """Rebuild the per-block attention context from the 2-D mask."""

    @abstractmethod
    def run_block(self, block: nn.Module, hidden: torch.Tensor, ctx: BlockContext) -> torch.Tensor:
        """One block: hidden (B x S x d) -> hidden (B x S x d)."""

    @abstractmethod
    def final_modules(self, model: HFModel, task: Task) -> dict[str, nn.Module]:
        """Modules after the last block (final norm, pooler, task head), by short name."""

    @abstractmethod
    def finish(
        self,
        final: nn.ModuleDict,
        hidden: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        task: Task,
        pad_token_id: int | None,
    ) -> torch.Tensor:
        """Last-block hidden states -> logits: (B x C) for classification, (B x S x V) for LM."""


def _last_token_index(input_ids: torch.Tensor, pad_token_id: int | None) -> torch.Tensor:
    """Index of the right-most non-padding token per row, exactly as transformers pools."""
    if pad_token_id is None:
        return torch.full((input_ids.shape[0],), input_ids.shape[1] - 1, dtype=torch.long)
    non_pad = (input_ids != pad_token_id).to(torch.int32)
    positions = torch.arange(input_ids.shape[-1], dtype=torch.int32, device=input_ids.device)
    return (positions * non_pad).argmax(-1)


class BertFamily(Family):
    """BERT-style encoders: embeddings -> ``encoder.layer[i]`` -> pooler -> classifier."""

    name = "bert"
    pooling: Pooling = "cls"
    model_types = ("bert", "roberta", "xlm-roberta", "electra")
    lora_target_regex = (
        r".*\.layer\.\d+\.(attention\.self\.(query|key|value)|attention\.output\.dense"
        r"|intermediate\.dense|output\.dense)"
    )
    task_head_modules = MappingProxyType({"classification": ("classifier",)})

    def backbone(self, model: HFModel) -> HFModel:
        prefix = getattr(model, "base_model_prefix", "bert")
        return getattr(model, prefix)  # type: ignore[no-any-return]

    def blocks(self, model: HFModel) -> nn.ModuleList:
        return self.backbone(model).encoder.layer  # type: ignore[no-any-return]

    def embeddings(self, model: HFModel) -> nn.Module:
        return cast(nn.Module, self.backbone(model).embeddings)

    def embed(self, model: HFModel, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embeddings(model)(input_ids=input_ids)  # type: ignore[no-any-return]

    def block_context(
        self, model: HFModel, hidden: torch.Tensor, attention_mask: torch.Tensor
    ) -> BlockContext:
        mask = create_bidirectional_mask(
            config=self.backbone(model).config, inputs_embeds=hidden, attention_mask=attention_mask
        )
        return BlockContext(mask=mask)

    def run_block(self, block: nn.Module, hidden: torch.Tensor, ctx: BlockContext) -> torch.Tensor:
        out = block(hidden, ctx.mask)
        return out[0] if isinstance(out, tuple) else out  # type: ignore[no-any-return]

    def final_modules(self, model: HFModel, task: Task) -> dict[str, nn.Module]:
        if task != "classification":
            raise UnsupportedArchitectureError(f"task {task!r} is not supported for encoder models")
        pooler = self.backbone(model).pooler
        if pooler is None:
            raise UnsupportedArchitectureError("BERT-family classification needs a pooler layer")
        return {"pooler": pooler, "classifier": model.classifier}  # type: ignore[dict-item]

    def finish(
        self,
        final: nn.ModuleDict,
        hidden: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        task: Task,
        pad_token_id: int | None,
    ) -> torch.Tensor:
        pooled = final["pooler"](hidden)
        return final["classifier"](pooled)  # type: ignore[no-any-return]


class _DecoderFamily(Family):
    """Shared final stage of decoder families: final norm, then score (pooled) or LM head."""

    task_head_modules = MappingProxyType({"classification": ("score",), "causal_lm": ()})
    norm_name = "norm"
    pooling: Pooling = "mean"

    def final_modules(self, model: HFModel, task: Task) -> dict[str, nn.Module]:
        norm = getattr(self.backbone(model), self.norm_name)
        head = model.score if task == "classification" else model.lm_head
        return {"norm": norm, "head": head}  # type: ignore[dict-item]

    def finish(
        self,
        final: nn.ModuleDict,
        hidden: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        task: Task,
        pad_token_id: int | None,
    ) -> torch.Tensor:
        hidden = final["norm"](hidden)
        if task == "classification":
            last = _last_token_index(input_ids, pad_token_id)
            hidden = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        return final["head"](hidden)  # type: ignore[no-any-return]


class LlamaFamily(_DecoderFamily):
    """LLaMA-style decoders: rotary positions, pre-norm blocks, RMSNorm."""

    name = "llama"
    model_types = ("llama", "mistral", "qwen2")
    lora_target_regex = (
        r".*\.layers\.\d+\.(self_attn\.(q_proj|k_proj|v_proj|o_proj)|mlp\.(gate_proj|up_proj|down_proj))"
    )

    def backbone(self, model: HFModel) -> HFModel:
        return model.model  # type: ignore[return-value]

    def blocks(self, model: HFModel) -> nn.ModuleList:
        return self.backbone(model).layers  # type: ignore[no-any-return]

    def embeddings(self, model: HFModel) -> nn.Module:
        return self.backbone(model).embed_tokens  # type: ignore[no-any-return]

    def embed(self, model: HFModel, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embeddings(model)(input_ids)  # type: ignore[no-any-return]

    def block_context(
        self, model: HFModel, hidden: torch.Tensor, attention_mask: torch.Tensor
    ) -> BlockContext:
        backbone = self.backbone(model)
        position_ids = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
        mask = create_causal_mask(
            config=backbone.config,
            inputs_embeds=hidden,
            attention_mask=attention_mask,
            past_key_values=None,
            position_ids=position_ids,
        )
        rotary = backbone.rotary_emb(hidden, position_ids=position_ids)
        return BlockContext(mask=mask, position_ids=position_ids, position_embeddings=rotary)

    def run_block(self, block: nn.Module, hidden: torch.Tensor, ctx: BlockContext) -> torch.Tensor:
        out = block(
            hidden,
            attention_mask=ctx.mask,
            position_ids=ctx.position_ids,
            position_embeddings=ctx.position_embeddings,
        )
        return out[0] if isinstance(out, tuple) else out  # type: ignore[no-any-return]


class Gpt2Family(_DecoderFamily):
    """GPT-2-style decoders: learned positions, Conv1D projections, LayerNorm."""

    name = "gpt2"
    model_types = ("gpt2",)
    lora_target_regex = r".*\.h\.\d+\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)"
    fan_in_fan_out = True
    norm_name = "ln_f"

    def backbone(self, model: HFModel) -> HFModel:
        return model.transformer  # type: ignore[return-value]

    def blocks(self, model: HFModel) -> nn.ModuleList:
        return self.backbone(model).h  # type: ignore[no-any-return]

    def embeddings(self, model: HFModel) -> nn.Module:
        backbone = self.backbone(model)
        return nn.ModuleDict({"wte": backbone.wte, "wpe": backbone.wpe})

    def embed(self, model: HFModel, input_ids: torch.Tensor) -> torch.Tensor:
        backbone = self.backbone(model)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        hidden = backbone.wte(input_ids) + backbone.wpe(positions)
        return backbone.drop(hidden)  # type: ignore[no-any-return]

    def block_context(
        self, model: HFModel, hidden: torch.Tensor, attention_mask: torch.Tensor
    ) -> BlockContext:
        position_ids = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
        mask = create_causal_mask(
            config=self.backbone(model).config,
            inputs_embeds=hidden,
            attention_mask=attention_mask,
            past_key_values=None,
            position_ids=position_ids,
        )
        return BlockContext(mask=mask, position_ids=position_ids)

    def run_block(self, block: nn.Module, hidden: torch.Tensor, ctx: BlockContext) -> torch.Tensor:
        out = block(hidden, attention_mask=ctx.mask, position_ids=ctx.position_ids)
        return out[0] if isinstance(out, tuple) else out  # type: ignore[no-any-return]


FAMILIES: tuple[Family, ...] = (BertFamily(), LlamaFamily(), Gpt2Family())


def family_for(model_type: str) -> Family:
    """The :class:`Family` for a config ``model_type``; UnsupportedArchitectureError otherwise."""
    for family in FAMILIES:
        if model_type in family.model_types:
            return family
    supported = sorted(t for f in FAMILIES for t in f.model_types)
    raise UnsupportedArchitectureError(f"no splitter for model_type {model_type!r}; supported: {supported}")
