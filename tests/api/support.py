"""Helpers of the API tests: in-process clients, error assertions, a tiny split model."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import torch
from fastapi import FastAPI
from transformers import BertConfig, BertForSequenceClassification

from elsa.model.loading import wrap_with_lora
from elsa.model.split import SplitModel
from elsa.params import LoraParams

HIDDEN = 32
BLOCKS = 4
LABELS = 3


@asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Run the app's lifespan and yield an in-process client of it."""
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client,
    ):
        yield client


def bearer(token: str) -> dict[str, str]:
    """Authorization header for a bearer token."""
    return {"authorization": f"Bearer {token}"}


def assert_error(response: httpx.Response, status: int, code: str, *, mentions: str | None = None) -> str:
    """The response is the documented error body with this status and code; returns its detail."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert set(body) == {"error", "detail"}, body
    assert body["error"] == code, body
    assert isinstance(body["detail"], str) and body["detail"], body
    if mentions is not None:
        assert mentions in body["detail"], body
    return body["detail"]


def tiny_split_model(seed: int = 0) -> SplitModel:
    """A tiny random BERT classifier (4 blocks, d=32) with LoRA, as a split model."""
    torch.manual_seed(seed)  # transformers' own init uses the global RNG; tests only
    config = BertConfig(
        vocab_size=97,
        pad_token_id=0,
        num_labels=LABELS,
        hidden_size=HIDDEN,
        num_hidden_layers=BLOCKS,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    hf = BertForSequenceClassification(config).eval()
    return SplitModel(wrap_with_lora(hf, None, "classification", LoraParams(rank=4, alpha=8), seed))
