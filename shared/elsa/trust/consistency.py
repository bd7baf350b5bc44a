"""Prediction-consistency evidence (DESIGN §2.5).

Every device uploads its predicted class (or next-token) distributions on the public probes.
Within a cluster, device n's evidence is

    evidence_n = 1 − mean over probes q of JS₂(p_n[q], consensus_{−n}[q])

where consensus_{−n} is the trust-weighted mean of the *other* members' predictions and JS₂ is
the Jensen–Shannon divergence in **bits** (base-2 logarithms), which lies in [0, 1]; evidence
therefore lies in [0, 1] too (1 = agrees with its peers, 0 = disjoint predictions).

:func:`sharpen` optionally tempers the uploaded distributions first (p^(1/T), renormalised).
Models trained for a few steps on a few hundred examples are soft on ambiguous public probes, so
raw honest-vs-hostile JS gaps are small in absolute terms and a fixed τ_min cannot separate
them; tempered towards their argmax (T = 0.05, the run default) the same predictions separate
(measured on BBC News with MiniLM, 6 devices, after 4 rounds: trust 0.72-0.74 honest vs 0.43
label-flip and 0.46 noise; at T = 1: 0.79-0.84 vs 0.73 and 0.74).

:func:`relative_evidence` then divides each node's evidence by the median evidence of its
cluster (the run default, ``control.trust_evidence: relative``). Absolute evidence depends on how
much honest devices disagree, which non-IID data and SS-OP noise on the probes raise for everyone:
with 4 honest devices on BBC News (α = 0.5, κ = 1) absolute evidence pulled every device's trust
to 0.49-0.61 in two rounds and quarantined half of them, and which half depended on float-level
differences. Relative to the median an honest majority scores ~1 however soft its predictions
are, and a device counts as hostile when it agrees with its peers clearly less than they agree
with each other.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal, TypeVar

import numpy as np
import numpy.typing as npt

from elsa.errors import ConfigError

FloatArray = npt.NDArray[np.float64]
NodeT = TypeVar("NodeT", bound=str)
SingletonRule = Literal["trusted", "population"]


def _distributions(name: str, values: npt.ArrayLike) -> FloatArray:
    """float64 copy with rows normalised to sum 1; ConfigError on negative/non-finite/zero rows."""
    x = np.array(values, dtype=np.float64, copy=True)
    if x.ndim < 1 or x.shape[-1] < 1:
        raise ConfigError(f"{name} must have a class axis, got shape {x.shape}")
    if not np.all(np.isfinite(x)) or np.any(x < 0):
        raise ConfigError(f"{name} must be finite and >= 0")
    totals = x.sum(axis=-1, keepdims=True)
    if np.any(totals <= 0):
        raise ConfigError(f"{name} has a row that sums to 0")
    return np.asarray(x / totals, dtype=np.float64)


def _kl_bits(p: FloatArray, m: FloatArray) -> FloatArray:
    """Σ p log₂(p/m) over the last axis with 0·log 0 = 0 (m > 0 wherever p > 0 here)."""
    safe_p = np.where(p > 0, p, 1.0)
    safe_m = np.where(p > 0, m, 1.0)
    return np.asarray(np.sum(np.where(p > 0, p * np.log2(safe_p / safe_m), 0.0), axis=-1), dtype=np.float64)


def sharpen(values: npt.ArrayLike, temperature: float) -> FloatArray:
    """Distributions tempered to p^(1/T) and renormalised (T = 1: unchanged, T -> 0: one-hot)."""
    if not (np.isfinite(temperature) and temperature > 0):
        raise ConfigError(f"temperature must be > 0, got {temperature}")
    p = _distributions("predictions", values)
    if temperature == 1.0:
        return p
    logp = np.log(np.clip(p, 1e-300, None)) / temperature
    logp -= logp.max(axis=-1, keepdims=True)
    out = np.exp(logp) * (p > 0)
    return np.asarray(out / out.sum(axis=-1, keepdims=True), dtype=np.float64)


def js_divergence(p: npt.ArrayLike, q: npt.ArrayLike) -> FloatArray:
    """Jensen–Shannon divergence in bits between distributions along the last axis.

    ``p``, ``q``: (..., C) non-negative arrays of the same shape; each row is normalised to sum
    1 first. Returns (...) float64 in [0, 1]: symmetric, 0 iff the rows are equal, 1 iff their
    supports are disjoint. Inputs are not mutated.
    """
    a = _distributions("p", p)
    b = _distributions("q", q)
    if a.shape != b.shape:
        raise ConfigError(f"distributions of different shapes: {a.shape} != {b.shape}")
    m = 0.5 * (a + b)
    js = 0.5 * _kl_bits(a, m) + 0.5 * _kl_bits(b, m)
    return np.asarray(np.clip(js, 0.0, 1.0), dtype=np.float64)


def consensus(
    predictions: Mapping[NodeT, npt.ArrayLike],
    trust: Mapping[NodeT, float],
    exclude: NodeT | None = None,
    *,
    members: Iterable[NodeT] | None = None,
    default_trust: float = 1.0,
) -> FloatArray:
    """Trust-weighted mean of probe predictions, ``exclude`` left out (DESIGN §2.5).

    ``predictions``: node → (Q x C) distributions (rows normalised here); ``members``: the nodes
    to average over (default: every node of ``predictions``); ``trust``: node → trust >= 0, a
    missing node counts ``default_trust``. When every remaining weight is 0 the plain mean is
    used. Returns (Q x C) float64 with rows summing to 1. ConfigError when no node remains or
    shapes differ. Inputs are not mutated.
    """
    pool = sorted(set(predictions if members is None else members))
    others = [n for n in pool if n != exclude]
    if not others:
        raise ConfigError("consensus needs at least one node besides the excluded one")
    missing = [n for n in others if n not in predictions]
    if missing:
        raise ConfigError(f"no predictions for {missing[:3]}")
    arrays = [_distributions(f"predictions[{n!r}]", predictions[n]) for n in others]
    shape = arrays[0].shape
    if len(shape) != 2 or any(a.shape != shape for a in arrays):
        raise ConfigError(
            f"predictions must all be (Q x C) of one shape, got {sorted({a.shape for a in arrays})}"
        )
    weights = np.array([float(trust.get(n, default_trust)) for n in others], dtype=np.float64)
    if not np.all(np.isfinite(weights)) or np.any(weights < 0):
        raise ConfigError("trust values must be finite and >= 0")
    if weights.sum() <= 0:
        weights = np.ones_like(weights)
    stacked = np.stack(arrays)
    return np.asarray(np.tensordot(weights / weights.sum(), stacked, axes=1), dtype=np.float64)


def evidence(
    predictions: Mapping[NodeT, npt.ArrayLike],
    members: Iterable[NodeT],
    trust: Mapping[NodeT, float],
    *,
    default_trust: float = 1.0,
    singleton: SingletonRule = "trusted",
) -> dict[NodeT, float]:
    """Evidence in [0, 1] for each member of one cluster (DESIGN §2.5; module docstring).

    ``predictions``: node → (Q x C) probe distributions, for the members (and, for
    ``singleton="population"``, every other node); ``members``: the cluster; ``trust``: the
    previous round's trust (missing → ``default_trust``). A cluster of one has no peers: with
    ``singleton="trusted"`` (default) its evidence is 1.0 (no evidence against it); with
    ``singleton="population"`` it is compared with the consensus of every other node in
    ``predictions`` instead (1.0 if there is none). Inputs are not mutated.
    """
    group = sorted(set(members))
    if not group:
        return {}
    missing = [n for n in group if n not in predictions]
    if missing:
        raise ConfigError(f"no predictions for {missing[:3]}")
    if len(group) == 1:
        node = group[0]
        if singleton == "trusted" or len(predictions) < 2:
            return {node: 1.0}
        ref = consensus(predictions, trust, node, default_trust=default_trust)
        return {node: 1.0 - float(js_divergence(predictions[node], ref).mean())}
    out: dict[NodeT, float] = {}
    for node in group:
        ref = consensus(predictions, trust, node, members=group, default_trust=default_trust)
        own = _distributions(f"predictions[{node!r}]", predictions[node])
        if own.shape != ref.shape:
            raise ConfigError(f"predictions of {node!r} have shape {own.shape}, peers {ref.shape}")
        out[node] = float(np.clip(1.0 - js_divergence(own, ref).mean(), 0.0, 1.0))
    return out


def relative_evidence(
    evidence: Mapping[NodeT, float], labels: Mapping[NodeT, int], *, min_cluster: int = 3
) -> dict[NodeT, float]:
    """Evidence divided by its reference median, clipped to [0, 1] (module docstring).

    The reference of a node is the median evidence of its cluster (``labels``: node → cluster id;
    a node missing from ``labels`` is in cluster 0) when that cluster has at least
    ``min_cluster`` scored members, else the median over every node of ``evidence`` (a pair's
    JS divergences are symmetric, so two members get the same evidence and cannot be told apart
    by their own median). A reference of 0 leaves the evidence as it is. Inputs are not mutated.
    """
    if min_cluster < 1:
        raise ConfigError(f"min_cluster must be >= 1, got {min_cluster}")
    clusters: dict[int, list[float]] = {}
    for node, value in evidence.items():
        clusters.setdefault(int(labels.get(node, 0)), []).append(float(value))
    population = float(np.median(list(evidence.values()))) if evidence else 0.0
    out: dict[NodeT, float] = {}
    for node in sorted(evidence):
        group = clusters[int(labels.get(node, 0))]
        reference = float(np.median(group)) if len(group) >= min_cluster else population
        value = float(evidence[node])
        out[node] = value if reference <= 0 else min(max(value / reference, 0.0), 1.0)
    return out


def evidence_by_cluster(
    predictions: Mapping[NodeT, npt.ArrayLike],
    labels: Mapping[NodeT, int],
    trust: Mapping[NodeT, float],
    *,
    default_trust: float = 1.0,
    singleton: SingletonRule = "trusted",
) -> dict[NodeT, float]:
    """:func:`evidence` for every cluster of ``labels`` (node → cluster id), merged into one dict.

    Only nodes present in both ``labels`` and ``predictions`` are scored; inputs are not mutated.
    """
    clusters: dict[int, list[NodeT]] = {}
    for node in sorted(labels):
        if node in predictions:
            clusters.setdefault(int(labels[node]), []).append(node)
    out: dict[NodeT, float] = {}
    for cid in sorted(clusters):
        out.update(
            evidence(predictions, clusters[cid], trust, default_trust=default_trust, singleton=singleton)
        )
    return out
