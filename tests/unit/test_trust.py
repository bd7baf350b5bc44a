"""Prediction-consistency evidence and EMA trust (DESIGN §2.5)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from elsa.errors import ConfigError
from elsa.params import TrustParams
from elsa.trust import (
    aggregation_weights,
    consensus,
    evidence,
    evidence_by_cluster,
    js_divergence,
    quarantined,
    update_trust,
)

PARAMS = TrustParams()  # beta 0.7, tau_min 0.5, initial 1.0


def honest_predictions(
    rng: np.random.Generator, truth: np.ndarray, classes: int, margin: float = 3.0
) -> np.ndarray:
    """(Q x C) softmax predictions favouring the true class by ``margin`` logits, plus device noise."""
    logits = rng.normal(scale=0.5, size=(truth.shape[0], classes))
    logits[np.arange(truth.shape[0]), truth] += margin
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return np.asarray(e / e.sum(axis=1, keepdims=True))


# --- Jensen–Shannon -------------------------------------------------------------------------


def test_js_divergence_hand_computed_in_bits() -> None:
    assert float(js_divergence([1.0, 0.0], [0.0, 1.0])) == pytest.approx(1.0)
    # m = (0.75, 0.25): KL(p||m) = log2(4/3), KL(q||m) = (log2(2/3) + 1)/2
    expected = 0.5 * math.log2(4 / 3) + 0.5 * 0.5 * (math.log2(2 / 3) + 1.0)
    assert float(js_divergence([1.0, 0.0], [0.5, 0.5])) == pytest.approx(expected)
    # rows are normalised first; shapes broadcast over leading axes
    out = js_divergence([[2.0, 2.0], [1.0, 0.0]], [[0.5, 0.5], [1.0, 0.0]])
    np.testing.assert_allclose(out, [0.0, 0.0], atol=1e-12)
    with pytest.raises(ConfigError):
        js_divergence([1.0, -0.1], [0.5, 0.5])
    with pytest.raises(ConfigError):
        js_divergence([0.0, 0.0], [0.5, 0.5])
    with pytest.raises(ConfigError):
        js_divergence([1.0, 0.0], [0.3, 0.3, 0.4])


_dists = hnp.arrays(np.float64, (3, 4), elements=st.floats(0.0, 10.0)).filter(
    lambda a: bool(np.all(a.sum(axis=1) > 1e-3))
)


@settings(max_examples=80, deadline=None)
@given(_dists, _dists)
def test_js_is_symmetric_bounded_and_zero_on_identical(p: np.ndarray, q: np.ndarray) -> None:
    pq, qp = js_divergence(p, q), js_divergence(q, p)
    np.testing.assert_allclose(pq, qp, atol=1e-12)
    assert np.all(pq >= 0.0)
    assert np.all(pq <= 1.0)
    np.testing.assert_allclose(js_divergence(p, p), 0.0, atol=1e-12)


# --- consensus and evidence -----------------------------------------------------------------


def test_consensus_is_the_trust_weighted_mean_of_the_others() -> None:
    preds = {"a": [[1.0, 0.0]], "b": [[0.0, 1.0]], "c": [[0.5, 0.5]]}
    out = consensus(preds, {"a": 0.8, "b": 0.2, "c": 1.0}, exclude="c")
    np.testing.assert_allclose(out, [[0.8, 0.2]])
    # a node without trust counts default_trust; all-zero weights fall back to the plain mean
    np.testing.assert_allclose(consensus(preds, {"a": 0.8}, exclude="c", default_trust=0.2), [[0.8, 0.2]])
    np.testing.assert_allclose(consensus(preds, {"a": 0.0, "b": 0.0}, exclude="c"), [[0.5, 0.5]])
    with pytest.raises(ConfigError):
        consensus({"a": [[1.0, 0.0]]}, {}, exclude="a")
    with pytest.raises(ConfigError):
        consensus(preds, {"a": -1.0}, exclude="c")


def test_label_flipping_device_gets_low_evidence_and_honest_ones_high() -> None:
    rng = np.random.default_rng(0)
    classes, q = 4, 64
    truth = rng.integers(classes, size=q)
    preds = {f"honest{i}": honest_predictions(rng, truth, classes) for i in range(4)}
    flip = np.array([1, 2, 3, 0])  # the attacker permutes the classes of its predictions
    preds["flipper"] = honest_predictions(rng, truth, classes)[:, flip]
    before = {k: v.copy() for k, v in preds.items()}
    scores = evidence(preds, preds.keys(), {})
    assert scores["flipper"] < 0.45
    assert all(scores[f"honest{i}"] > 0.85 for i in range(4))
    # more confident predictions make the disagreement starker
    confident = {k: honest_predictions(rng, truth, classes, margin=5.0) for k in preds}
    confident["flipper"] = confident["flipper"][:, flip]
    assert evidence(confident, confident.keys(), {})["flipper"] < 0.15
    for key, value in preds.items():
        np.testing.assert_array_equal(value, before[key])


def test_a_cluster_of_one_has_evidence_one_unless_compared_with_the_population() -> None:
    preds = {"a": [[1.0, 0.0]], "b": [[1.0, 0.0]], "c": [[0.0, 1.0]]}
    assert evidence(preds, ["c"], {}) == {"c": 1.0}
    assert evidence(preds, ["c"], {}, singleton="population") == {"c": pytest.approx(0.0)}
    assert evidence({"a": [[1.0, 0.0]]}, ["a"], {}, singleton="population") == {"a": 1.0}
    assert evidence(preds, [], {}) == {}
    with pytest.raises(ConfigError):
        evidence(preds, ["zz", "a"], {})


def test_evidence_by_cluster_scores_each_cluster_against_its_own_members() -> None:
    preds = {"a": [[1.0, 0.0]], "b": [[1.0, 0.0]], "c": [[0.0, 1.0]], "d": [[0.0, 1.0]]}
    # two clusters that disagree with each other but agree internally: all fully consistent
    assert evidence_by_cluster(preds, {"a": 0, "b": 0, "c": 1, "d": 1}, {}) == {
        "a": 1.0,
        "b": 1.0,
        "c": 1.0,
        "d": 1.0,
    }
    mixed = evidence_by_cluster(preds, {"a": 0, "b": 1, "c": 0, "d": 1}, {})
    assert all(value == pytest.approx(0.0) for value in mixed.values())


# --- EMA trust, quarantine, weights ---------------------------------------------------------


def test_update_trust_hand_computed() -> None:
    previous = {"a": 0.8, "b": 0.4, "idle": 0.3}
    out = update_trust(previous, {"a": 0.2, "b": 1.0, "new": 0.0}, PARAMS)
    assert out["a"] == pytest.approx(0.7 * 0.8 + 0.3 * 0.2)  # 0.62
    assert out["b"] == pytest.approx(0.7 * 0.4 + 0.3 * 1.0)  # 0.58
    assert out["new"] == pytest.approx(0.7 * 1.0)  # starts at initial = 1.0
    assert out["idle"] == 0.3  # no report this round: unchanged
    assert previous == {"a": 0.8, "b": 0.4, "idle": 0.3}
    with pytest.raises(ConfigError):
        update_trust({}, {"a": 1.5}, PARAMS)
    with pytest.raises(ConfigError):
        update_trust({}, {"a": float("nan")}, PARAMS)


def test_quarantine_is_strictly_below_tau_min() -> None:
    assert quarantined({"a": 0.49, "b": 0.5, "c": 0.9}, PARAMS) == {"a"}


def test_aggregation_weights_hand_computed() -> None:
    trust = {"a": 1.0, "b": 0.6, "c": 0.3}
    weights = aggregation_weights(trust, {"a": 10, "b": 50, "c": 1000}, PARAMS)
    # c is quarantined; a: 1.0 * 10 = 10, b: 0.6 * 50 = 30 -> 0.25, 0.75
    assert weights == {"a": pytest.approx(0.25), "b": pytest.approx(0.75), "c": 0.0}
    assert sum(weights.values()) == pytest.approx(1.0)
    # missing trust counts as initial; all quarantined -> all zero
    assert aggregation_weights({}, {"x": 3, "y": 1}, PARAMS) == {"x": 0.75, "y": 0.25}
    assert aggregation_weights({"x": 0.1}, {"x": 3}, PARAMS) == {"x": 0.0}
    with pytest.raises(ConfigError):
        aggregation_weights({}, {"x": -1}, PARAMS)


@settings(max_examples=60, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from([f"n{i}" for i in range(8)]),
        st.tuples(st.floats(0.0, 1.0), st.integers(0, 1000)),
        min_size=1,
    )
)
def test_weights_are_zero_when_quarantined_and_sum_to_one(nodes: dict[str, tuple[float, int]]) -> None:
    trust = {n: t for n, (t, _) in nodes.items()}
    examples = {n: c for n, (_, c) in nodes.items()}
    weights = aggregation_weights(trust, examples, PARAMS)
    assert set(weights) == set(nodes)
    for node in quarantined(trust, PARAMS):
        assert weights[node] == 0.0
    total = sum(weights.values())
    assert total == pytest.approx(1.0) or total == 0.0
    assert all(w >= 0.0 for w in weights.values())


def test_recovery_lifts_a_quarantined_node_after_a_few_rounds() -> None:
    trust = {"a": 0.2}
    rounds = 0
    while "a" in quarantined(trust, PARAMS):
        trust = update_trust(trust, {"a": 0.95}, PARAMS)
        rounds += 1
    # 0.2 -> 0.425 -> 0.5825
    assert rounds == 2
    assert trust["a"] == pytest.approx(0.7 * (0.7 * 0.2 + 0.3 * 0.95) + 0.3 * 0.95)


def test_flipper_is_quarantined_within_a_few_rounds_while_honest_devices_stay_trusted() -> None:
    rng = np.random.default_rng(1)
    classes, q = 5, 64
    truth = rng.integers(classes, size=q)
    flip = np.roll(np.arange(classes), 1)
    trust: dict[str, float] = {}
    history = []
    for _ in range(6):
        preds = {f"h{i}": honest_predictions(rng, truth, classes, margin=5.0) for i in range(5)}
        preds["m0"] = honest_predictions(rng, truth, classes, margin=5.0)[:, flip]
        trust = update_trust(trust, evidence(preds, preds.keys(), trust), PARAMS)
        history.append(quarantined(trust, PARAMS))
    # evidence ~0.1: 1.0 -> ~0.73 -> ~0.54 -> ~0.41, quarantined from round 3 on, and stays so
    assert history[1] == set()
    assert all(q == {"m0"} for q in history[2:])
