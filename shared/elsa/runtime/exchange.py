"""Adapter exchanges as count sketches (DESIGN §2.8-§2.9, §3), shared by both runtimes.

* :class:`DeltaSender` — a sender's (device's or edge's) path from a trained delta to the
  sketches it sends: optional isotropic noise (``privacy.adapter_kappa``), then the count
  sketch with sender-side error feedback.
* :func:`update_message` / :func:`read_update` — ``AdapterUpdate`` out and, on the receiver,
  checked against the geometries it expects (another geometry → 409, unknown keys → 409).
* :func:`broadcast_message` / :func:`read_broadcast` — ``AdapterBroadcast`` of merged
  sketches (deltas against a base model every receiver holds) and full values.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence

import torch

from elsa.errors import AdapterMismatchError, NotFoundError
from elsa.infra.http import CloudClient
from elsa.model.adapters import AdapterState
from elsa.params import SketchParams, WireDType
from elsa.perturb import perturb_state_delta
from elsa.runtime.config import RunConfig
from elsa.sketch import (
    CountSketch,
    ErrorFeedback,
    SketchedState,
    apply_sketches,
    sketch_state,
    sketches_from_payloads,
    sketches_to_payloads,
    state_geometries,
)
from elsa.wire import AdapterBroadcast, AdapterUpdate, from_payload, state_to_payloads

__all__ = [
    "DeltaSender",
    "broadcast_message",
    "catch_up",
    "read_broadcast",
    "read_update",
    "update_message",
]


class DeltaSender:
    """One sender's compression state for one run: noise generator and error-feedback memory.

    ``noise_seed`` seeds the adapter noise (``None`` = OS entropy); it only matters when
    ``privacy.adapter_kappa > 0`` and ``perturb`` (devices perturb what they send; an edge's
    body deltas hold no device's raw update, so edges do not).
    """

    def __init__(self, config: RunConfig, noise_seed: int | None = None, *, perturb: bool = True) -> None:
        self.params = config.sketch_params()
        self.seed = config.seed
        self.adapter_kappa = config.privacy.adapter_kappa if perturb else 0.0
        self.feedback = ErrorFeedback(self.params, self.seed) if config.sketch.error_feedback else None
        seed = noise_seed if noise_seed is not None else secrets.randbits(63)
        self.generator = torch.Generator().manual_seed(seed)

    def compress(self, delta: Mapping[str, torch.Tensor], round_index: int) -> SketchedState:
        """The sketches to send for ``delta`` in cloud round ``round_index`` (keys sorted)."""
        if self.adapter_kappa > 0:
            delta = perturb_state_delta(delta, self.adapter_kappa, self.generator)
        if self.feedback is not None:
            return self.feedback.compress(delta, round_index)
        return sketch_state(delta, self.params, round_index, self.seed)


def update_message(
    sketches: Mapping[str, CountSketch],
    *,
    node_id: str,
    run_id: str,
    round_index: int,
    num_examples: int,
    loss: float | None = None,
    weight: float | None = None,
    dtype: WireDType = "fp32",
) -> AdapterUpdate:
    """An ``AdapterUpdate`` carrying ``sketches`` (tables in ``dtype``: the run's
    ``SketchParams.table_dtype``, to which senders and merges round them, so the cast is exact)."""
    return AdapterUpdate(
        node_id=node_id,
        run_id=run_id,
        round=round_index,
        num_examples=num_examples,
        sketches=sketches_to_payloads(sketches, dtype),
        loss=loss,
        weight=weight,
    )


def read_update(
    message: AdapterUpdate,
    model: Mapping[str, torch.Tensor],
    config: RunConfig,
    keys: Sequence[str] | None = None,
) -> SketchedState:
    """Check a received update against this round's geometries and rebuild its sketches.

    ``model`` supplies each key's size; ``keys`` (when given) are exactly the keys the sender
    must send. Unknown or missing keys → :class:`AdapterMismatchError` (409); a sketch of
    another geometry → :class:`GeometryMismatchError` (409); a bad table → 400/422.
    """
    wanted = list(keys) if keys is not None else sorted(message.sketches)
    lengths = {k: int(model[k].numel()) for k in wanted if k in model}
    expected = state_geometries(lengths, config.sketch_params(), message.round, config.seed)
    return sketches_from_payloads(message.sketches, expected, exact_keys=keys is not None)


def broadcast_message(
    *,
    run_id: str,
    round_index: int,
    version: int,
    sketches: Mapping[str, CountSketch] | None = None,
    values: Mapping[str, torch.Tensor] | None = None,
    base_version: int | None = None,
    dtype: WireDType = "fp32",
) -> AdapterBroadcast:
    """An ``AdapterBroadcast`` of merged sketches (against ``base_version``; tables in ``dtype``)
    and full values (fp32)."""
    return AdapterBroadcast(
        run_id=run_id,
        round=round_index,
        version=version,
        tensors=state_to_payloads(values or {}),
        sketches=sketches_to_payloads(sketches or {}, dtype),
        base_version=base_version if sketches else None,
    )


def read_broadcast(
    message: AdapterBroadcast, base: Mapping[str, torch.Tensor], params: SketchParams, seed: int
) -> AdapterState:
    """The model a broadcast describes: ``base`` with the message's keys replaced.

    A sketched key becomes ``base + decode(sketch)`` (bit-identical to what the aggregator
    computed from the same base), a full value replaces the base value. Every key must be one
    of ``base``'s with its shape; sketches must have the geometry of ``message.round``.
    """
    lengths = {k: int(base[k].numel()) for k in message.sketches if k in base}
    expected = state_geometries(lengths, params, message.round, seed)
    deltas = sketches_from_payloads(message.sketches, expected)
    out = apply_sketches(base, deltas, params)
    for key, payload in message.tensors.items():
        if key not in base:
            raise AdapterMismatchError(f"broadcast holds a key the model does not have: {key}")
        out[key] = from_payload(payload, dtype=torch.float32, expected_shape=tuple(base[key].shape))
    return out


def catch_up(
    cloud: CloudClient,
    run_id: str,
    version: int,
    held: tuple[int, AdapterState],
    initial: AdapterState,
    config: RunConfig,
) -> tuple[tuple[int, AdapterState], int]:
    """Bring a node's held global adapter ``(version, state)`` to ``version``; returns the new
    held pair and the bytes read. Holding the version before, the node applies the cloud's merged
    sketch (bit-identical to the cloud's aggregate); otherwise, or when the cloud has no sketch
    for it, it downloads the version whole (keys it lacks keep ``initial``)."""
    held_version, state = held
    if version == held_version:
        return held, 0
    if version == held_version + 1:
        try:
            message, nbytes = cloud.global_delta(run_id, version)
            return (version, read_broadcast(message, state, config.sketch_params(), config.seed)), nbytes
        except NotFoundError:
            pass  # e.g. a version stored before sketches were kept: fetch it whole
    full, nbytes = cloud.global_adapter_sized(run_id, version)
    return (version, {**initial, **full}), nbytes
