"""Cutting a task model into device head, edge body and device tail (DESIGN §1, §2.2, §2.7).

* head  = embeddings + blocks ``[0, h)``            (device)
* body  = blocks ``[h, L - t)``                      (edge)
* tail  = blocks ``[L - t, L)`` + final norm / task head (device)

Segments are thin :class:`torch.nn.Module` views over the modules of one shared
:class:`~elsa.model.loading.TaskModel`; blocks sit in a ``ModuleDict`` keyed by their *global*
index, so a segment's trainable parameter names are the adapter keys of
:mod:`elsa.model.adapters`. A segment runs with any caller-owned adapter state through
:meth:`Segment.run` (``torch.func.functional_call``): the frozen base exists once, and each
simulated device or edge session only owns its adapter tensors and optimizer state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from elsa.errors import AdapterMismatchError
from elsa.model.adapters import AdapterState, key_from_param_name
from elsa.model.loading import TaskModel
from elsa.model.pooling import pooled_representation
from elsa.params import SplitParams


class Segment(nn.Module):
    """Blocks ``[start, stop)`` of a task model (plus embeddings or final modules in subclasses)."""

    def __init__(self, task_model: TaskModel, start: int, stop: int) -> None:
        super().__init__()
        blocks = task_model.family.blocks(task_model.hf_model)
        self.start, self.stop = start, stop
        self.blocks = nn.ModuleDict({str(i): blocks[i] for i in range(start, stop)})
        # kept outside nn.Module registration: the shared model is not owned by the segment
        self._shared: tuple[TaskModel] = (task_model,)

    @property
    def task_model(self) -> TaskModel:
        """The shared task model this segment views."""
        return self._shared[0]

    def trainable_names(self) -> dict[str, str]:
        """Adapter key -> parameter name inside this segment, for every trainable parameter."""
        return {key_from_param_name(n): n for n, p in self.named_parameters() if p.requires_grad}

    def trainable_keys(self) -> tuple[str, ...]:
        """The adapter keys this segment trains, sorted."""
        return tuple(sorted(self.trainable_names()))

    def live_state(self) -> AdapterState:
        """Detached copies of the current values of this segment's trainable parameters."""
        params = dict(self.named_parameters())
        return {k: params[n].detach().clone() for k, n in self.trainable_names().items()}

    def run_blocks(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Apply this segment's blocks in order, rebuilding masks/positions from the 2-D mask."""
        tm = self.task_model
        ctx = tm.family.block_context(tm.hf_model, hidden, attention_mask)
        for i in range(self.start, self.stop):
            hidden = tm.family.run_block(self.blocks[str(i)], hidden, ctx)
        return hidden

    def run(self, state: Mapping[str, torch.Tensor], *args: Any) -> torch.Tensor:
        """``forward(*args)`` with the trainable parameters taken from ``state`` (by adapter key).

        ``state`` must hold every key of :meth:`trainable_keys` (extra keys are ignored). The
        tensors are used as-is, so gradients flow into them; they are not otherwise mutated.
        """
        return self.call(state, args)  # type: ignore[no-any-return]

    def call(
        self, state: Mapping[str, torch.Tensor], args: tuple[Any, ...], kwargs: dict[str, Any] | None = None
    ) -> Any:
        """:meth:`run` with keyword arguments too, returning whatever ``forward`` returns."""
        names = self.trainable_names()
        missing = [k for k in names if k not in state]
        if missing:
            raise AdapterMismatchError(
                f"adapter state lacks {len(missing)} keys of this segment, e.g. {missing[:2]}"
            )
        params = {name: state[key] for key, name in names.items()}
        return functional_call(self, params, args, kwargs, strict=False)


class HeadSegment(Segment):
    """Device head: embeddings + blocks ``[0, h)``. ``forward(input_ids, attention_mask)``."""

    def __init__(self, task_model: TaskModel, head_blocks: int) -> None:
        super().__init__(task_model, 0, head_blocks)
        self.embeddings = task_model.family.embeddings(task_model.hf_model)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B x S int64, B x S) -> lower-cut hidden states (B x S x d)."""
        tm = self.task_model
        hidden = tm.family.embed(tm.hf_model, input_ids)
        return self.run_blocks(hidden, attention_mask)


class BodySegment(Segment):
    """Edge body: blocks ``[h, L - t)``. ``forward(hidden, attention_mask)``."""

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Lower-cut hidden (B x S x d) -> upper-cut hidden (B x S x d)."""
        return self.run_blocks(hidden, attention_mask)


class TailSegment(Segment):
    """Device tail: blocks ``[L - t, L)`` + final norm / pooler / task head."""

    def __init__(self, task_model: TaskModel, start: int) -> None:
        super().__init__(task_model, start, task_model.num_blocks)
        modules = task_model.family.final_modules(task_model.hf_model, task_model.task)
        self.final = nn.ModuleDict(modules)

    def forward(
        self,
        hidden: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        with_features: bool = False,
    ) -> Any:
        """Upper-cut hidden (B x S x d) -> logits (B x C, or B x S x V for causal LM).

        ``with_features=True`` returns ``(features, logits)``: the family's pooled final
        representation (B x d; [CLS] for encoders, mean of real tokens for decoders), which
        behavioural fingerprints are built from (DESIGN §2.3).
        """
        tm = self.task_model
        hidden = self.run_blocks(hidden, attention_mask)
        logits = tm.family.finish(self.final, hidden, input_ids, attention_mask, tm.task, tm.pad_token_id)
        if not with_features:
            return logits
        return pooled_representation(hidden, attention_mask, tm.family.pooling), logits


@dataclass(frozen=True)
class Segments:
    """The three segments of one cut."""

    split: SplitParams
    head: HeadSegment
    body: BodySegment
    tail: TailSegment

    def device_keys(self) -> tuple[str, ...]:
        """Adapter keys trained on the device (head + tail)."""
        return tuple(sorted(self.head.trainable_keys() + self.tail.trainable_keys()))

    def edge_keys(self) -> tuple[str, ...]:
        """Adapter keys trained on the edge (body)."""
        return self.body.trainable_keys()


class SplitModel:
    """A task model and its cuts. One per process; cuts are cheap views, cached per (h, t)."""

    def __init__(self, task_model: TaskModel) -> None:
        self.task_model = task_model
        self._cuts: dict[tuple[int, int], Segments] = {}
        self._whole = TailSegment(task_model, 0)
        #: the adapter as initialised (kept: evaluation and export load other states into the
        #: shared live parameters, and every node must derive version 0 and the SS-OP subspaces
        #: from the same initial adapter)
        self._initial = self._whole.live_state()

    @property
    def num_blocks(self) -> int:
        """L, the number of transformer blocks."""
        return self.task_model.num_blocks

    def segments(self, split: SplitParams) -> Segments:
        """Head/body/tail for a cut; ConfigError when the cut leaves no edge block."""
        split.check_fits(self.num_blocks)
        key = (split.head_blocks, split.tail_blocks)
        if key not in self._cuts:
            tm = self.task_model
            self._cuts[key] = Segments(
                split=split,
                head=HeadSegment(tm, split.head_blocks),
                body=BodySegment(tm, split.head_blocks, self.num_blocks - split.tail_blocks),
                tail=TailSegment(tm, self.num_blocks - split.tail_blocks),
            )
        return self._cuts[key]

    def adapter_keys(self) -> tuple[str, ...]:
        """Every adapter key of the model (all blocks + task head), independent of any cut."""
        return self._whole.trainable_keys()

    def initial_state(self) -> AdapterState:
        """The adapter state the model was initialised with (fresh copies; unaffected by
        :meth:`load_state`)."""
        return {k: v.clone() for k, v in self._initial.items()}

    def load_state(self, state: Mapping[str, torch.Tensor]) -> None:
        """Copy a full adapter state into the shared model's live parameters (for export/eval).

        Raises AdapterMismatchError on missing, unknown or wrongly-shaped keys; the model is
        left unchanged in that case.
        """
        names = self._whole.trainable_names()
        unknown = sorted(set(state) - set(names))
        missing = sorted(set(names) - set(state))
        if unknown or missing:
            raise AdapterMismatchError(
                f"adapter keys differ from the model: missing {missing[:3]}, unknown {unknown[:3]}"
            )
        params = dict(self._whole.named_parameters())
        for key, name in names.items():
            if tuple(params[name].shape) != tuple(state[key].shape):
                raise AdapterMismatchError(
                    f"{key}: shape {tuple(state[key].shape)} != model {tuple(params[name].shape)}"
                )
        with torch.no_grad():
            for key, name in names.items():
                params[name].copy_(state[key])

    def monolithic_logits(
        self, state: Mapping[str, torch.Tensor], input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """Logits of the unsplit model with ``state`` loaded, through the stock peft forward."""
        self.load_state(state)
        out = self.task_model.peft_model(input_ids=input_ids, attention_mask=attention_mask)
        return out.logits  # type: ignore[no-any-return]

    def export_peft(self, state: Mapping[str, torch.Tensor], out_dir: Path) -> Path:
        """Write ``state`` as a standard PEFT adapter directory.

        The result loads with ``PeftModel.from_pretrained(base_task_model, out_dir)`` on the
        unsplit model (the task head travels as peft ``modules_to_save``).
        """
        self.load_state(state)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        self.task_model.peft_model.save_pretrained(str(out_dir))
        return out_dir
