"""Behavioural fingerprints, symmetric-KL divergence and spectral clustering (DESIGN §2.3-§2.4)."""

from elsa.cluster.divergence import skl_matrix, symmetric_kl
from elsa.cluster.fingerprints import Fingerprint, gaussian_fingerprint, probe_basis
from elsa.cluster.kmeans import canonical_labels, kmeans
from elsa.cluster.metrics import adjusted_rand_index
from elsa.cluster.spectral import (
    affinity,
    cluster_fingerprints,
    eigengap_candidates,
    laplacian_spectrum,
    match_cluster_ids,
    mean_within_affinity,
    median_sigma,
    spectral_clusters,
)
from elsa.model.pooling import Pooling, pooled_representation

__all__ = [
    "Fingerprint",
    "Pooling",
    "adjusted_rand_index",
    "affinity",
    "canonical_labels",
    "cluster_fingerprints",
    "eigengap_candidates",
    "gaussian_fingerprint",
    "kmeans",
    "laplacian_spectrum",
    "match_cluster_ids",
    "mean_within_affinity",
    "median_sigma",
    "pooled_representation",
    "probe_basis",
    "skl_matrix",
    "spectral_clusters",
    "symmetric_kl",
]
