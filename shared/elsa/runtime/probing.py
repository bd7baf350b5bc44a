"""The device side of the control plane (DESIGN §2.3, §2.5): probes, public basis, reports.

Every node tokenises the same shipped probe set and derives the same public basis from the
*base* model (the run's initial adapter state, in which LoRA is a no-op), so fingerprints of
different devices live in one coordinate system. After its first edge round of local training
(its own model, before edge aggregation mixes it with its peers') a device runs the probes
through its split model — head here, body on its edge, tail here, exactly the path its
training uses — and reports its probe predictions (for trust) and, in fingerprint rounds, the
Gaussian of its projected representations (for clustering).

Decoder predictions are next-token distributions at each probe's last real token, summed into
:data:`PREDICTION_BUCKETS` buckets by token id: a fixed public coarsening that keeps reports
small (Q x 256 instead of Q x V) and can only shrink Jensen-Shannon divergences, never invent
them.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch

from elsa.cluster import gaussian_fingerprint, probe_basis
from elsa.data import load_probe_set
from elsa.errors import ConfigError
from elsa.model.adapters import AdapterState
from elsa.model.split import BodySegment, SplitModel
from elsa.model.tokenize import encode_texts
from elsa.model.training import CutLink
from elsa.runtime.config import RunConfig
from elsa.runtime.control import ProbeResult
from elsa.runtime.nodes import DeviceData, DeviceNode

FloatArray = npt.NDArray[np.float64]

#: next-token distributions of decoders are coarsened to this many token-id buckets
PREDICTION_BUCKETS = 256
PROBE_BATCH = 64


def load_probes(model: SplitModel, config: RunConfig) -> DeviceData:
    """The run's Q public probe sentences, tokenised at the run's max length (labels unused)."""
    tokenizer = model.task_model.tokenizer
    if tokenizer is None:
        raise ConfigError("the task model has no tokenizer to encode the probe set")
    ids, mask = encode_texts(tokenizer, load_probe_set(config.control.num_probes), config.train.max_length)
    return DeviceData(ids, mask, torch.zeros(ids.shape[0], dtype=torch.long))


def distributions(logits: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Probe predictions from logits: class softmax (B x C) or bucketed next-token softmax."""
    logits = logits.detach().to(torch.float32)
    if logits.dim() == 2:
        return torch.softmax(logits, dim=-1)
    last = (attention_mask.sum(dim=1) - 1).clamp_min(0)
    probs = torch.softmax(logits[torch.arange(logits.shape[0]), last], dim=-1)
    buckets = torch.arange(probs.shape[-1]) % PREDICTION_BUCKETS
    out = torch.zeros(probs.shape[0], PREDICTION_BUCKETS, dtype=probs.dtype)
    return out.index_add_(1, buckets, probs)


class _InProcessBody:
    """A :class:`CutLink` that runs the body segment here (for the base-model basis)."""

    def __init__(self, body: BodySegment, state: AdapterState) -> None:
        self.body = body
        self.state = state

    def forward(self, step: int, activations: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.body.run(self.state, activations, attention_mask)

    def backward(self, step: int, grad: torch.Tensor) -> torch.Tensor:
        raise ConfigError("the base-model probe link is inference only")


def run_probes(
    device: DeviceNode, probes: DeviceData, link: CutLink | None = None, stream: str | None = "probe"
) -> tuple[FloatArray, FloatArray]:
    """(Q x d) pooled final representations and (Q x C) predictions of the device's model
    (``stream``: the SS-OP noise stream of what leaves the device; None = nothing leaves)."""
    link = link if link is not None else device.link
    if link is None:
        raise ConfigError(f"device {device.device_id} has no edge link to run the probes through")
    reps, preds = [], []
    for start in range(0, len(probes), PROBE_BATCH):
        batch = probes.batch(np.arange(start, min(start + PROBE_BATCH, len(probes))))
        pooled, logits = device.stepper.features(batch, link, stream)
        reps.append(pooled.to(torch.float64))
        preds.append(distributions(logits, batch.attention_mask).to(torch.float64))
    return torch.cat(reps).numpy(), torch.cat(preds).numpy()


def public_basis(model: SplitModel, device: DeviceNode, probes: DeviceData, config: RunConfig) -> FloatArray:
    """The public k-dim basis: top principal directions of the base model's probe representations.

    Computed in process from the run's initial state (which every node derives from the run
    seed), so every node gets the same basis without exchanging it.
    """
    saved = {k: v.detach().clone() for k, v in device.stepper.state.items()}
    initial = model.initial_state()
    device.stepper.load(initial)
    try:
        reps, _ = run_probes(device, probes, _InProcessBody(device.segments.body, initial), stream=None)
    finally:
        device.stepper.load(saved)
    return probe_basis(reps, config.control.basis_dim)


def probe_report(
    device: DeviceNode, probes: DeviceData, basis: FloatArray, config: RunConfig, *, fingerprint: bool
) -> ProbeResult:
    """The device's report after local training: predictions, plus its fingerprint if asked."""
    reps, predictions = run_probes(device, probes)
    fp = gaussian_fingerprint(reps, basis, config.control.fingerprint_eps) if fingerprint else None
    return ProbeResult(predictions=predictions, fingerprint=fp)
