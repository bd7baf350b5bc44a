"""A split-trained adapter exported as a standard PEFT directory reloads on the unsplit model
and gives the same logits as the split model (DESIGN §1: 'a standard PEFT adapter at the end')."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft import PeftModel

from conftest import tiny_batch, tiny_hf_model, tiny_task_model
from elsa.errors import AdapterMismatchError, ConfigError
from elsa.model.split import SplitModel
from elsa.model.training import Batch, DeviceStepper, EdgeStepper
from elsa.params import SplitParams, TrainParams, TransportParams
from elsa.runtime.transport import ByteCounter, InMemoryCutLink


def _train_a_little(model: SplitModel, batch: Batch, steps: int = 3) -> dict[str, torch.Tensor]:
    segments = model.segments(SplitParams(1, 1))
    start = model.initial_state()
    device = DeviceStepper.create(segments.head, segments.tail, start, TrainParams(learning_rate=1e-2))
    edge = EdgeStepper.create(segments.body, start, TrainParams(learning_rate=1e-2))
    link = InMemoryCutLink("s", edge, TransportParams(dtype="fp32"), ByteCounter())
    for step in range(steps):
        device.step(step, batch, link)
    return {
        **{k: v.detach().clone() for k, v in device.state.items()},
        **{k: v.detach().clone() for k, v in edge.state.items()},
    }


def _split_logits(model: SplitModel, state: dict[str, torch.Tensor], batch: Batch) -> torch.Tensor:
    segments = model.segments(SplitParams(1, 1))
    device = DeviceStepper.create(segments.head, segments.tail, state, TrainParams())
    edge = EdgeStepper.create(segments.body, state, TrainParams())
    return device.predict(batch, InMemoryCutLink("s", edge, TransportParams(dtype="fp32"), ByteCounter()))


@pytest.mark.parametrize(
    ("family", "task"), [("bert", "classification"), ("llama", "causal_lm"), ("gpt2", "classification")]
)
def test_exported_adapter_reloads_with_same_logits(family: str, task: str, tmp_path: Path) -> None:
    model = SplitModel(tiny_task_model(family, task))  # type: ignore[arg-type]
    ids, mask, labels = tiny_batch(task=task)  # type: ignore[arg-type]
    batch = Batch(ids, mask, labels)
    state = _train_a_little(model, batch)
    assert any(float(v.abs().max()) > 0 for k, v in state.items() if "lora_B" in k), "training changed LoRA B"
    split_logits = _split_logits(model, state, batch)

    out = model.export_peft(state, tmp_path / "adapter")
    assert (out / "adapter_config.json").is_file()
    assert (out / "adapter_model.safetensors").is_file()

    fresh_base = tiny_hf_model(family, task)  # type: ignore[arg-type]  # same seed -> same frozen base
    reloaded = PeftModel.from_pretrained(fresh_base, str(out)).eval()
    with torch.no_grad():
        logits = reloaded(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(logits, split_logits, rtol=1e-5, atol=1e-5)

    untouched = tiny_hf_model(family, task)(input_ids=ids, attention_mask=mask).logits  # type: ignore[arg-type]
    assert not torch.allclose(untouched, logits, atol=1e-4), "the adapter must actually change the model"


@pytest.mark.slow
def test_minilm_adapter_reloads_with_same_logits(minilm_model: SplitModel, tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification

    from elsa.model.packaged import minilm_dir

    tok = minilm_model.task_model.tokenizer
    assert tok is not None
    enc = tok(
        ["Markets fell on Monday.", "The band released a new album."], padding=True, return_tensors="pt"
    )
    batch = Batch(enc["input_ids"], enc["attention_mask"], torch.tensor([0, 1]))
    state = _train_a_little(minilm_model, batch, steps=2)
    split_logits = _split_logits(minilm_model, state, batch)
    out = minilm_model.export_peft(state, tmp_path / "adapter")
    base = AutoModelForSequenceClassification.from_pretrained(minilm_dir(), num_labels=5)
    reloaded = PeftModel.from_pretrained(base, str(out)).eval()
    with torch.no_grad():
        logits = reloaded(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    torch.testing.assert_close(logits, split_logits, rtol=1e-4, atol=1e-5)


def test_load_state_rejects_missing_unknown_and_misshaped_keys() -> None:
    model = SplitModel(tiny_task_model("bert"))
    good = model.initial_state()
    key = next(iter(good))
    with pytest.raises(AdapterMismatchError, match="missing"):
        model.load_state({k: v for k, v in good.items() if k != key})
    with pytest.raises(AdapterMismatchError, match="unknown"):
        model.load_state({**good, "blocks.99.x.weight": torch.zeros(1)})
    with pytest.raises(AdapterMismatchError, match="shape"):
        model.load_state({**good, key: torch.zeros(7, 7)})


def test_segments_reject_a_cut_without_edge_blocks() -> None:
    model = SplitModel(tiny_task_model("llama"))
    with pytest.raises(ConfigError, match="edge block"):
        model.segments(SplitParams(2, 2))
    with pytest.raises(ConfigError):
        SplitParams(0, 1)


def test_adapter_keys_are_global_block_indices_and_segments_partition_them() -> None:
    model = SplitModel(tiny_task_model("gpt2"))
    keys = set(model.adapter_keys())
    for split in (SplitParams(1, 1), SplitParams(2, 1), SplitParams(1, 2)):
        segs = model.segments(split)
        device, edge = set(segs.device_keys()), set(segs.edge_keys())
        assert device.isdisjoint(edge)
        assert device | edge == keys
        assert {int(k.split(".")[1]) for k in edge} == set(range(split.head_blocks, 4 - split.tail_blocks))
    assert any(k.startswith("final.head.") for k in keys), "the task head is trained in full"


@pytest.mark.parametrize(
    ("family", "task"), [("bert", "classification"), ("llama", "classification"), ("gpt2", "causal_lm")]
)
def test_model_free_peft_writer_matches_peft_save(family: str, task: str, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from elsa.model.peft_format import ADAPTER_FILE, write_peft_dir

    model = SplitModel(tiny_task_model(family, task))  # type: ignore[arg-type]
    g = torch.Generator().manual_seed(3)
    state = {k: torch.randn(v.shape, generator=g) for k, v in model.initial_state().items()}
    reference = load_file(str(model.export_peft(state, tmp_path / "peft") / ADAPTER_FILE))
    model_type = model.task_model.hf_model.config.model_type
    digest = write_peft_dir(
        state,
        tmp_path / "cloud",
        model_type=model_type,
        task=task,
        lora=model.task_model.lora,
        base_model="tiny",  # type: ignore[arg-type]
    )
    written = load_file(str(tmp_path / "cloud" / ADAPTER_FILE))
    assert sorted(written) == sorted(reference)
    for key, tensor in reference.items():
        torch.testing.assert_close(written[key], tensor, rtol=0, atol=0)
    assert len(digest) == 64
    reloaded = PeftModel.from_pretrained(tiny_hf_model(family, task), str(tmp_path / "cloud")).eval()  # type: ignore[arg-type]
    ids, mask, _ = tiny_batch(task=task)  # type: ignore[arg-type]
    with torch.no_grad():
        expected = model.monolithic_logits(state, ids, mask)
        torch.testing.assert_close(
            reloaded(input_ids=ids, attention_mask=mask).logits, expected, rtol=1e-5, atol=1e-5
        )
