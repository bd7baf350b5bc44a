"""Count sketches of adapter deltas with sender-side error feedback (DESIGN §3).

Each adapter tensor is flattened and encoded into a ``rows × cols`` count sketch whose hashes
and signs derive from (run seed, round, tensor name); sketches merge by (weighted) addition, so
edges and the cloud aggregate in sketch space and decode once. Senders keep what the sketch
loses in an :class:`ErrorFeedback` memory. Sketches of different geometry never combine
(:class:`elsa.errors.GeometryMismatchError`).
"""

from elsa.params import SketchEstimator, SketchParams
from elsa.sketch.count_sketch import CountSketch, keep_topk
from elsa.sketch.feedback import ErrorFeedback
from elsa.sketch.geometry import SketchGeometry, check_same_geometry, hashes, tensor_geometry
from elsa.sketch.state import (
    SketchedState,
    apply_sketches,
    round_state,
    sketch_state,
    sketched_norm,
    sketches_nbytes,
    state_geometries,
    unsketch_state,
    weighted_mean,
    weighted_sum,
)
from elsa.sketch.wire import (
    sketch_from_payload,
    sketch_to_payload,
    sketches_from_payloads,
    sketches_to_payloads,
)

__all__ = [
    "CountSketch",
    "ErrorFeedback",
    "SketchEstimator",
    "SketchGeometry",
    "SketchParams",
    "SketchedState",
    "apply_sketches",
    "check_same_geometry",
    "hashes",
    "keep_topk",
    "round_state",
    "sketch_from_payload",
    "sketch_state",
    "sketch_to_payload",
    "sketched_norm",
    "sketches_from_payloads",
    "sketches_nbytes",
    "sketches_to_payloads",
    "state_geometries",
    "tensor_geometry",
    "unsketch_state",
    "weighted_mean",
    "weighted_sum",
]
