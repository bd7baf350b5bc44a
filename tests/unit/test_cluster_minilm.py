"""Fingerprint clustering on the real packaged MiniLM and BBC News (DESIGN §2.3-§2.4).

Six simulated devices = three topic groups x two devices. Every device starts from the same
initial LoRA state, fine-tunes it for a few AdamW steps on its own BBC articles, then runs the
public probe set through its model; fingerprints are the Gaussians of the [CLS] representations
projected on the public basis (top principal directions of the *base* model's probe
representations). Devices trained on the same topic must cluster together; devices trained on
the same IID mix must form one cluster (the control that makes the first test meaningful).

Signal: 3 AdamW steps (lr 1e-3, batch 8, max_length 32) from the shared initial state suffice;
cross-topic SKL is 10-100x the within-topic SKL and the K = 3 eigengap is 0.35-0.49 (measured on
three topic choices), while same-mix devices give loose groupings (within-affinity <= 0.65).
Measured on 2 busy CPU cores with one torch thread: about 25 s for the module (one model load,
13 probe passes of 128 probes, 12 x 3 training steps).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from elsa.cluster import (
    Fingerprint,
    adjusted_rand_index,
    cluster_fingerprints,
    gaussian_fingerprint,
    pooled_representation,
    probe_basis,
)
from elsa.data import TextDataset, load_bbc_news, load_probe_set
from elsa.model.adapters import AdapterState
from elsa.model.loading import TaskModel, load_task_model
from elsa.model.packaged import minilm_dir
from elsa.model.split import SplitModel
from elsa.model.tokenize import encode_texts, trim_padding
from elsa.params import ClusteringParams

pytestmark = pytest.mark.slow

NUM_PROBES = 128
BASIS_DIM = 16
MAX_LENGTH = 32
EXAMPLES_PER_DEVICE = 32
STEPS = 3
BATCH = 8
LEARNING_RATE = 1e-3
EPS = 1e-3


@dataclass
class Setup:
    task_model: TaskModel
    split: SplitModel
    initial: AdapterState
    bbc: TextDataset
    probe_ids: torch.Tensor
    probe_mask: torch.Tensor
    basis: np.ndarray


@torch.no_grad()
def probe_representations(setup: Setup) -> np.ndarray:
    """(Q x d) [CLS] representations of the probes through the model's current adapter state."""
    out = []
    for start in range(0, setup.probe_ids.shape[0], 64):
        ids, mask = trim_padding(setup.probe_ids[start : start + 64], setup.probe_mask[start : start + 64])
        result = setup.task_model.peft_model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        out.append(pooled_representation(result.hidden_states[-1], mask, "cls"))
    return torch.cat(out).numpy()


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op thread for this module, restored afterwards.

    Small batches gain little from a second thread, and on a shared, busy machine OpenMP
    spin-waiting made the module ~8x slower in CPU time (measured: 197 s vs 25 s).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def setup(one_thread: None) -> Setup:
    task_model = load_task_model(minilm_dir(), "classification", num_labels=5, seed=0)
    split = SplitModel(task_model)
    initial = split.initial_state()
    assert task_model.tokenizer is not None
    ids, mask = encode_texts(task_model.tokenizer, load_probe_set(NUM_PROBES), MAX_LENGTH)
    partial = Setup(task_model, split, initial, load_bbc_news(), ids, mask, np.zeros(0))
    split.load_state(initial)
    partial.basis = probe_basis(probe_representations(partial), BASIS_DIM)
    return partial


def device_fingerprint(setup: Setup, topics: Sequence[int], rng: np.random.Generator) -> Fingerprint:
    """Fine-tune from the shared initial state on articles of ``topics``; fingerprint the probes."""
    pool = np.flatnonzero(np.isin(setup.bbc.labels, topics))
    chosen = rng.choice(pool, size=EXAMPLES_PER_DEVICE, replace=False)
    assert setup.task_model.tokenizer is not None
    ids, mask = encode_texts(setup.task_model.tokenizer, [setup.bbc.texts[i] for i in chosen], MAX_LENGTH)
    labels = torch.as_tensor(setup.bbc.labels[chosen])
    setup.split.load_state(setup.initial)
    trainable = [p for p in setup.task_model.peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=LEARNING_RATE)
    for _ in range(STEPS):
        batch = rng.choice(EXAMPLES_PER_DEVICE, size=BATCH, replace=False)
        batch_ids, batch_mask = trim_padding(ids[batch], mask[batch])
        logits = setup.task_model.peft_model(input_ids=batch_ids, attention_mask=batch_mask).logits
        loss = torch.nn.functional.cross_entropy(logits, labels[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return gaussian_fingerprint(probe_representations(setup), setup.basis, EPS)


def test_devices_trained_on_disjoint_bbc_topics_group_together(setup: Setup) -> None:
    rng = np.random.default_rng(0)
    groups = [[0], [2], [3]]  # business, politics, sport
    fingerprints, planted = [], []
    for device in range(6):
        group = [1, 0, 2, 2, 1, 0][device]  # interleaved, so the order gives nothing away
        fingerprints.append(device_fingerprint(setup, groups[group], rng))
        planted.append(group)
    labels = cluster_fingerprints(fingerprints, ClusteringParams(k_max=4))
    assert len(set(labels.tolist())) == 3
    assert adjusted_rand_index(labels.tolist(), planted) == 1.0


def test_devices_trained_on_the_same_topic_mix_form_one_cluster(setup: Setup) -> None:
    rng = np.random.default_rng(1)
    fingerprints = [device_fingerprint(setup, [0, 1, 2, 3, 4], rng) for _ in range(6)]
    labels = cluster_fingerprints(fingerprints, ClusteringParams(k_max=4))
    np.testing.assert_array_equal(labels, np.zeros(6, dtype=np.int64))
