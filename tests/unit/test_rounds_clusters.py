"""Per-cluster, trust-weighted edge aggregation and the cloud's mean over edges (DESIGN §2.5,
§2.8-§2.9), with real split segments of a tiny BERT and adapters keyed by global block index."""

from __future__ import annotations

import functools
from collections.abc import Mapping

import pytest
import torch

from conftest import tiny_task_model
from elsa.errors import ConflictError, GeometryMismatchError
from elsa.model.adapters import AdapterState, block_index, select
from elsa.model.split import SplitModel
from elsa.params import SketchParams, SplitParams, TrainParams
from elsa.runtime.exchange import broadcast_message, read_broadcast
from elsa.runtime.rounds import EXACT, EdgeRound, aggregate_edges
from elsa.sketch import SketchedState, apply_sketches, sketch_state
from elsa.wire import AdapterBroadcast, decode, encode

THIN = SplitParams(head_blocks=1, tail_blocks=1)  # device: blocks 0, 3 (+ classifier); edge: 1, 2
THICK = SplitParams(head_blocks=2, tail_blocks=1)  # device: blocks 0, 1, 3 (+ classifier); edge: 2


@functools.cache
def split_model() -> SplitModel:
    model = SplitModel(tiny_task_model("bert"))
    assert model.num_blocks == 4
    return model


def full_state(seed: int) -> AdapterState:
    """A full adapter state (every key of the model) with random values of the right shapes."""
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=g) for k, v in split_model().initial_state().items()}


def mean(states: list[tuple[Mapping[str, torch.Tensor], float]]) -> AdapterState:
    """Σ w·state / Σ w, key by key, in float64 (the expectation, computed independently)."""
    total = sum(w for _, w in states)
    return {
        k: (torch.stack([s[k].double() * w for s, w in states]).sum(dim=0) / total).float()
        for k in states[0][0]
    }


def assert_states_close(got: Mapping[str, torch.Tensor], want: Mapping[str, torch.Tensor]) -> None:
    assert sorted(got) == sorted(want)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-5, atol=1e-6, msg=k)


def edge_round(
    devices: dict[str, SplitParams],
    clusters: dict[str, int] | None = None,
    trust: dict[str, float] | None = None,
    start: AdapterState | None = None,
) -> EdgeRound:
    """An edge round serving ``devices`` (name → cut), every session opened."""
    r = EdgeRound(
        run_id="run",
        round_index=1,
        devices=tuple(sorted(devices)),
        start=start if start is not None else split_model().initial_state(),
        train=TrainParams(),
        clusters=clusters or {},
        trust=trust or {},
    )
    for device, cut in devices.items():
        r.open_session(device, split_model().segments(cut))
    return r


def train_and_submit(
    r: EdgeRound, device: str, cut: SplitParams, state: AdapterState, examples: int, at: int = 0
) -> None:
    """Stand-in for local training: the device ends the edge round holding ``state`` — its
    session's body copy on the edge, its head/tail on the device, which it submits."""
    segments = split_model().segments(cut)
    r.session(device).load(state)
    r.submit_state(device, at, select(state, segments.device_keys()), examples)


def test_two_clusters_aggregate_separately() -> None:
    cuts = dict.fromkeys(["d1", "d2", "d3", "d4"], THIN)
    clusters = {"d1": 1, "d2": 1, "d3": 2, "d4": 2}
    trust = {"d1": 0.5}  # missing = 1
    r = edge_round(cuts, clusters, trust)
    states = {d: full_state(i) for i, d in enumerate(cuts)}
    examples = {"d1": 10, "d2": 30, "d3": 5, "d4": 15}
    for d in cuts:
        train_and_submit(r, d, THIN, states[d], examples[d])
    assert r.complete(0)
    models = r.aggregate(0)
    assert sorted(models) == [1, 2]
    assert_states_close(models[1], mean([(states["d1"], 0.5 * 10), (states["d2"], 30.0)]))
    assert_states_close(models[2], mean([(states["d3"], 5.0), (states["d4"], 15.0)]))
    assert sorted(models[1]) == sorted(split_model().adapter_keys())
    # each device gets its own cluster's model, and its session continues from it
    device_keys = split_model().segments(THIN).device_keys()
    for d in cuts:
        assert_states_close(r.device_model(d, 0, device_keys), select(models[clusters[d]], device_keys))
        assert_states_close(r.session(d).state, select(models[clusters[d]], r.session(d).state))
    assert r.aggregate(0) is models  # idempotent
    assert r.weight("d1") == 5.0 and r.weight("d2") == 30.0


def test_devices_without_a_cluster_share_cluster_0() -> None:
    r = edge_round({"a": THIN, "b": THIN})
    states = {"a": full_state(1), "b": full_state(2)}
    train_and_submit(r, "a", THIN, states["a"], 1)
    train_and_submit(r, "b", THIN, states["b"], 3)
    models = r.aggregate(0)
    assert list(models) == [0]
    assert_states_close(models[0], mean([(states["a"], 1.0), (states["b"], 3.0)]))


def test_a_zero_trust_device_has_no_influence_on_its_cluster() -> None:
    cuts = {"honest": THIN, "quarantined": THIN, "alone": THIN}
    clusters = {"honest": 1, "quarantined": 1, "alone": 2}
    r = edge_round(cuts, clusters, trust={"quarantined": 0.0, "alone": 0.0})
    honest = full_state(3)
    train_and_submit(r, "honest", THIN, honest, 10)
    train_and_submit(r, "quarantined", THIN, {k: v * 1000 for k, v in full_state(4).items()}, 1000)
    train_and_submit(r, "alone", THIN, full_state(5), 50)
    models = r.aggregate(0)
    assert r.weight("quarantined") == 0.0
    assert_states_close(models[1], honest)
    # a cluster whose submitters all weigh 0 keeps the start ...
    assert_states_close(models[2], r.start)
    # ... and, later in the round, its previous model; the quarantined device keeps training from
    # its cluster's model
    assert_states_close(r.session("quarantined").state, select(honest, r.session("quarantined").state))
    honest_2 = full_state(6)
    train_and_submit(r, "honest", THIN, honest_2, 10, at=1)
    train_and_submit(r, "quarantined", THIN, full_state(7), 1000, at=1)
    train_and_submit(r, "alone", THIN, full_state(8), 50, at=1)
    models_2 = r.aggregate(1)
    assert_states_close(models_2[1], honest_2)
    assert_states_close(models_2[2], models[2])


def test_a_cluster_that_submits_0_examples_keeps_its_previous_model() -> None:
    r = edge_round({"a": THIN, "b": THIN}, clusters={"a": 1, "b": 2})
    first = {"a": full_state(9), "b": full_state(10)}
    for d in ("a", "b"):
        train_and_submit(r, d, THIN, first[d], 4)
    models = r.aggregate(0)
    train_and_submit(r, "a", THIN, full_state(11), 4, at=1)
    train_and_submit(r, "b", THIN, full_state(12), 0, at=1)
    models_2 = r.aggregate(1)
    assert_states_close(models_2[1], full_state(11))
    assert_states_close(models_2[2], models[2])
    assert_states_close(models_2[2], first["b"])


def test_devices_with_different_cuts_aggregate_by_global_block_index() -> None:
    cuts = {"thin": THIN, "thick": THICK}
    thin_keys, thick_keys = (split_model().segments(c) for c in (THIN, THICK))
    # the cut really differs: block 1 is on the edge for one and on the device for the other
    assert {block_index(k) for k in thin_keys.edge_keys()} == {1, 2}
    assert {block_index(k) for k in thick_keys.edge_keys()} == {2}
    r = edge_round(cuts)
    states = {"thin": full_state(13), "thick": full_state(14)}
    train_and_submit(r, "thin", THIN, states["thin"], 2)
    train_and_submit(r, "thick", THICK, states["thick"], 6)
    (model,) = r.aggregate(0).values()
    expected = mean([(states["thin"], 2.0), (states["thick"], 6.0)])
    assert sorted(model) == sorted(split_model().adapter_keys())
    assert_states_close(model, expected)
    # each device gets back what its own cut needs, and each session its own body keys
    assert_states_close(
        r.device_model("thick", 0, thick_keys.device_keys()), select(expected, thick_keys.device_keys())
    )
    assert_states_close(
        r.device_model("thin", 0, thin_keys.device_keys()), select(expected, thin_keys.device_keys())
    )
    assert sorted(r.session("thin").state) == sorted(thin_keys.edge_keys())
    assert_states_close(r.session("thin").state, select(expected, thin_keys.edge_keys()))
    assert_states_close(r.session("thick").state, select(expected, thick_keys.edge_keys()))


def test_final_model_weight_is_the_sum_of_trust_times_examples() -> None:
    cuts = {"a": THIN, "b": THICK, "c": THIN, "q": THIN}
    clusters = {"a": 1, "b": 1, "c": 2, "q": 2}
    trust = {"a": 0.8, "b": 0.6, "c": 0.9, "q": 0.0}
    examples = {"a": 10, "b": 20, "c": 5, "q": 100}
    r = edge_round(cuts, clusters, trust)
    with pytest.raises(ConflictError):
        r.final_model()
    states = {d: full_state(20 + i) for i, d in enumerate(cuts)}
    # the final model is the last edge round's: edge round 0 must not count
    for d in cuts:
        train_and_submit(r, d, cuts[d], full_state(40), 1)
    r.aggregate(0)
    for d in cuts:
        train_and_submit(r, d, cuts[d], states[d], examples[d], at=1)
    r.aggregate(1)
    model, total_examples, weight = r.final_model()
    assert weight == pytest.approx(0.8 * 10 + 0.6 * 20 + 0.9 * 5 + 0.0 * 100)
    assert total_examples == 10 + 20 + 5 + 100
    # linear: the mean of the cluster models = the trust × examples mean of the devices' states
    assert_states_close(model, mean([(states[d], trust[d] * examples[d]) for d in ("a", "b", "c")]))


def test_final_model_of_an_all_quarantined_edge_weighs_0() -> None:
    r = edge_round({"a": THIN, "b": THIN}, trust={"a": 0.0, "b": 0.0})
    train_and_submit(r, "a", THIN, full_state(30), 7)
    train_and_submit(r, "b", THIN, full_state(31), 9)
    r.aggregate(0)
    model, total_examples, weight = r.final_model()
    assert weight == 0.0 and total_examples == 16
    assert_states_close(model, r.start)


def exact_delta(state: AdapterState, start: AdapterState, round_index: int = 1) -> SketchedState:
    return sketch_state({k: state[k] - start[k] for k in state}, EXACT, round_index, 0)


def test_aggregate_edges_skips_zero_weight_edges_and_keeps_the_start_when_all_are_zero() -> None:
    start = full_state(49)
    a, b, c = full_state(50), full_state(51), full_state(52)
    sa, sb, sc = (exact_delta(x, start) for x in (a, b, c))
    out, merged = aggregate_edges({"e1": (sa, 2.0), "e2": (sb, 0.0), "e3": (sc, 1.0)}, start, EXACT)
    assert_states_close(out, mean([(a, 2.0), (c, 1.0)]))
    assert sorted(merged) == sorted(start)
    only, _ = aggregate_edges({"e1": (sa, 0.0), "e2": (sb, 3.0)}, start, EXACT)
    assert_states_close(only, b)
    kept, none = aggregate_edges({"e1": (sa, 0.0), "e2": (sb, 0.0)}, start, EXACT)
    assert_states_close(kept, start) and none == {}
    with pytest.raises(ConflictError):
        aggregate_edges({}, start, EXACT)


SKETCHED = SketchParams(rows=3, compression=4.0, dense_below=64)


def test_sketched_round_receivers_rebuild_the_aggregators_model_bit_for_bit() -> None:
    """Compressed sketches: the devices rebuild their cluster model from the broadcast, and the
    cloud the edge model from its upload, exactly as the aggregator computed them."""
    cuts = {"a": THIN, "b": THIN, "c": THICK}
    start = full_state(60)
    r = EdgeRound("run", 3, tuple(cuts), start, TrainParams(), clusters={"c": 1}, sketch=SKETCHED, seed=5)
    for d, cut in cuts.items():
        r.open_session(d, split_model().segments(cut))
        train_and_submit(r, d, cut, full_state(61 + len(d) + ord(d[0])), 3)
    models = r.aggregate(0)
    for d, cut in cuts.items():
        keys = split_model().segments(cut).device_keys()
        sketches, values = r.device_broadcast(d, 0, keys)
        message = broadcast_message(
            run_id="run", round_index=3, version=0, sketches=sketches, values=values, base_version=2
        )
        got = read_broadcast(decode(encode(message), AdapterBroadcast), start, SKETCHED, 5)
        for key in keys:
            assert torch.equal(got[key], models[r.cluster(d)][key]), key
        assert any(not s.geometry.dense for s in sketches.values())  # really compressed
    # the edge's upload, with its exact (body) part sketched exactly, decodes to the edge model
    merged, exact, examples, weight = r.final_update()
    part = sketch_state(exact, SKETCHED, 3, 5)
    dense_exact = {k: v for k, v in part.items() if v.geometry.dense}
    assert examples == 9 and weight == 9.0
    assert set(exact) <= set(start) and dense_exact == {}  # body tensors are sketched, not dense
    model, _, _ = r.final_model()
    rebuilt = apply_sketches(start, merged, SKETCHED)
    for key, value in exact.items():
        rebuilt[key] = rebuilt[key] + value
    assert_states_close(rebuilt, model)


def test_a_sketch_of_another_geometry_is_refused() -> None:
    r = EdgeRound("run", 3, ("a",), full_state(70), TrainParams(), sketch=SKETCHED, seed=5)
    r.open_session("a", split_model().segments(THIN))
    keys = split_model().segments(THIN).device_keys()
    delta = {k: torch.zeros_like(r.start[k]) for k in keys}
    for wrong in (sketch_state(delta, SKETCHED, 4, 5), sketch_state(delta, SKETCHED, 3, 6)):
        with pytest.raises(GeometryMismatchError):
            r.submit("a", 0, wrong, 1)
    assert r.submissions.get(0, {}) == {}
    r.submit("a", 0, sketch_state(delta, SKETCHED, 3, 5), 1)


def test_a_huge_update_is_bounded_to_a_multiple_of_the_median_norm_before_merging() -> None:
    """norm_bound 3: a device sending 1000x an honest-sized update moves its cluster's model by at
    most 3x the median update (scaled, not dropped); honest-sized updates are untouched."""
    cuts = dict.fromkeys(["a", "b", "c", "huge"], THIN)
    start = split_model().initial_state()
    deltas = {d: full_state(20 + i) for i, d in enumerate(cuts)}
    deltas["huge"] = {k: v * 1000 for k, v in deltas["huge"].items()}
    keys = split_model().segments(THIN).device_keys()
    r = edge_round(cuts, start=start)
    r.norm_bound = 3.0
    for d in cuts:
        train_and_submit(r, d, THIN, {k: start[k] + deltas[d][k] for k in start}, 10)
    model = r.aggregate(0)[0]
    norms = {d: float(torch.cat([deltas[d][k].flatten() for k in keys]).norm()) for d in cuts}
    ordered = sorted(norms.values())
    median = (ordered[1] + ordered[2]) / 2
    scale = 3.0 * median / norms["huge"]
    want = mean([({k: deltas[d][k] * (scale if d == "huge" else 1.0) for k in keys}, 1.0) for d in cuts])
    assert_states_close(select(model, keys), {k: start[k] + want[k] for k in keys})
    # off: the plain mean, dominated by the huge update
    r_off = edge_round(cuts, start=start)
    for d in cuts:
        train_and_submit(r_off, d, THIN, {k: start[k] + deltas[d][k] for k in start}, 10)
    plain = mean([({k: deltas[d][k] for k in keys}, 1.0) for d in cuts])
    assert_states_close(select(r_off.aggregate(0)[0], keys), {k: start[k] + plain[k] for k in keys})
