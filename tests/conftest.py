"""Shared fixtures: tiny random models built from configs (fast, deterministic)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    GPT2Config,
    GPT2ForSequenceClassification,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
)

from elsa.model.loading import TaskModel, wrap_with_lora
from elsa.model.split import SplitModel
from elsa.params import LoraParams, Task

VOCAB = 97
PAD = 0


def tiny_hf_model(family: str, task: Task, num_labels: int = 3, seed: int = 0) -> nn.Module:
    """A tiny random transformers model of a family (4 blocks, d=32)."""
    torch.manual_seed(seed)  # transformers' own init uses the global RNG; tests only
    common = {"vocab_size": VOCAB, "pad_token_id": PAD, "num_labels": num_labels}
    model: nn.Module
    if family == "bert":
        cfg = BertConfig(
            hidden_size=32,
            num_hidden_layers=4,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=64,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            **common,
        )
        model = BertForSequenceClassification(cfg)
    elif family == "llama":
        cfg = LlamaConfig(
            hidden_size=32,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=64,
            max_position_embeddings=64,
            tie_word_embeddings=True,
            **common,
        )
        model = LlamaForSequenceClassification(cfg) if task == "classification" else LlamaForCausalLM(cfg)
    elif family == "gpt2":
        cfg = GPT2Config(
            n_embd=32,
            n_layer=4,
            n_head=4,
            n_positions=64,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            bos_token_id=1,
            eos_token_id=2,
            **common,
        )
        model = GPT2ForSequenceClassification(cfg) if task == "classification" else GPT2LMHeadModel(cfg)
    else:
        raise ValueError(family)
    return model.eval()


def tiny_task_model(family: str, task: Task = "classification", seed: int = 0) -> TaskModel:
    """A tiny LoRA-wrapped task model."""
    return wrap_with_lora(
        tiny_hf_model(family, task, seed=seed), None, task, LoraParams(rank=4, alpha=8), seed
    )


def tiny_batch(
    batch: int = 3, seq: int = 10, seed: int = 1, task: Task = "classification", num_labels: int = 3
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded random ids, mask and labels (rows of different lengths)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (batch, seq), generator=g)
    lengths = torch.tensor([seq - (i * 3) % (seq - 2) for i in range(batch)])
    mask = (torch.arange(seq)[None, :] < lengths[:, None]).long()
    ids = ids * mask + PAD * (1 - mask)
    if task == "classification":
        labels = torch.randint(0, num_labels, (batch,), generator=g)
    else:
        labels = ids.masked_fill(mask == 0, -100)
    return ids, mask, labels


@pytest.fixture(scope="session")
def minilm_model() -> SplitModel:
    """The packaged all-MiniLM-L6-v2 as a 5-class classifier with LoRA (loaded once)."""
    from elsa.model.loading import load_task_model
    from elsa.model.packaged import minilm_dir

    return SplitModel(load_task_model(minilm_dir(), "classification", num_labels=5, seed=0))
