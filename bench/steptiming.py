"""Phase timing of one split training step (``DeviceStepper.step`` through a cut link to an edge).

Timing hooks stamp ``perf_counter`` times into a :class:`Marks`: the driver stamps ``t0`` and
``t1`` around the step, :func:`segment_stamps` stamps the end of the head and tail forwards
(``head1``, ``tail1``), and :class:`StampedLink` wrapped around the cut link (prefix ``link``) and
around the edge's stepper (prefix ``edge``) stamps each exchange's start and end (``link_f0`` ...
``edge_b1``). :meth:`Marks.phases_ms` cuts the step into :data:`CUT_PHASES`, which every split
step has, then into the spans a script names for the rest of its backward pass; together they
sum to the whole step.

Used by ``split_overhead.py`` and ``decoder_llm.py``; ``gpu.py`` stamps after synchronising the
device. Like ``benchkit``, imported by its bare name (``bench/`` is on ``sys.path``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from elsa.model.training import CutLink

#: the phases of every split step, up to the codec of the backward exchange (in step order)
CUT_PHASES = ("head_fwd", "cut_fwd_codec", "body_fwd", "tail_fwd", "loss_tail_bwd", "cut_bwd_codec")


@dataclass
class Marks:
    """``perf_counter`` stamps of the current step, by name (a later stamp replaces an earlier one)."""

    t: dict[str, float] = field(default_factory=dict, init=False)

    def __call__(self, name: str) -> None:
        self.t[name] = time.perf_counter()

    def hook(self, name: str) -> Callable[..., None]:
        """A hook (any arguments, e.g. a forward or optimizer-step hook) that stamps ``name``."""

        def stamp(*_args: Any) -> None:
            self(name)

        return stamp

    def phases_ms(self, backward_spans: Mapping[str, tuple[str, str]]) -> dict[str, float]:
        """The step cut into :data:`CUT_PHASES`, then ``backward_spans`` (phase -> (start stamp,
        end stamp)) for the rest; in ms, in that order.

        Needs the stamps ``t0``, ``head1``, ``link_f1``, ``edge_f0``, ``edge_f1``, ``tail1``,
        ``link_b0``, ``link_b1``, ``edge_b0``, ``edge_b1`` and those ``backward_spans`` names; the
        phases sum to ``t1 - t0`` when ``backward_spans`` cover ``link_b1`` .. ``t1`` and the edge's
        backward ``edge_b0`` .. ``edge_b1``. The codec phases are the link's exchange time minus
        the edge's work inside it.
        """
        t = self.t
        body_fwd = t["edge_f1"] - t["edge_f0"]
        body_bwd_all = t["edge_b1"] - t["edge_b0"]
        spans = {
            "head_fwd": t["head1"] - t["t0"],
            "cut_fwd_codec": t["link_f1"] - t["head1"] - body_fwd,
            "body_fwd": body_fwd,
            "tail_fwd": t["tail1"] - t["link_f1"],
            "loss_tail_bwd": t["link_b0"] - t["tail1"],
            "cut_bwd_codec": t["link_b1"] - t["link_b0"] - body_bwd_all,
        }
        spans.update({phase: t[end] - t[start] for phase, (start, end) in backward_spans.items()})
        return {k: v * 1e3 for k, v in spans.items()}


@dataclass
class StampedLink:
    """A cut link or edge session port around ``inner`` that stamps ``<prefix>_f0`` / ``_f1``
    around each forward and ``<prefix>_b0`` / ``_b1`` around each backward in ``marks``."""

    inner: CutLink
    marks: Marks
    prefix: str

    def forward(self, step: int, activations: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        self.marks(f"{self.prefix}_f0")
        out = self.inner.forward(step, activations, attention_mask)
        self.marks(f"{self.prefix}_f1")
        return out

    def backward(self, step: int, grad: torch.Tensor) -> torch.Tensor:
        self.marks(f"{self.prefix}_b0")
        out = self.inner.backward(step, grad)
        self.marks(f"{self.prefix}_b1")
        return out


@contextmanager
def segment_stamps(marks: Marks, head: torch.nn.Module, tail: torch.nn.Module) -> Iterator[None]:
    """While inside, stamp ``head1`` / ``tail1`` in ``marks`` at the end of every forward of
    ``head`` / ``tail`` (forward hooks, removed on exit)."""
    handles = [
        head.register_forward_hook(marks.hook("head1")),
        tail.register_forward_hook(marks.hook("tail1")),
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
