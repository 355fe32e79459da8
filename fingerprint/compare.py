"""Compare two fingerprints: HuRef's 100 × cosine similarity and a calibrated verdict.

Similarity is taken on the invariant vectors when both files carry them, on v otherwise.
Thresholds come from the zoo benchmark (`benchmarks/fingerprint_zoo.py`, see the
fingerprint readme). A similarity at or above `related` says same-lineage, at or below
`unrelated` says unrelated, in between is inconclusive. `false_positive_rate` is the rate
implied at the `related` threshold by a Gaussian fitted to the zoo's unrelated pairs
(one-sided); the zoo itself had no unrelated pair above it.
"""

from __future__ import annotations

import math

import torch

from fingerprint import invariants as inv
from fingerprint.extract import Fingerprint
from zkfp.errors import FingerprintError

# Calibrated on the zoo (benchmarks/fingerprint_zoo.py, spec tokens, 121 related / 285 unrelated
# pairs): `related` sits above every unrelated pair, `unrelated` below every related pair;
# null_mean/null_sd describe the unrelated pairs (Gaussian null model for the implied FPR).
THRESHOLDS = {
    "invariants": {"related": 75.0, "unrelated": 50.0, "null_mean": 16.2, "null_sd": 15.2},
    "v": {"related": 85.0, "unrelated": 45.0, "null_mean": 2.3, "null_sd": 24.1},
}


def implied_fpr(threshold: float, mean: float, sd: float) -> float:
    """P(N(mean, sd²) ≥ threshold): the false-positive rate of the Gaussian null at a threshold."""
    return 0.5 * math.erfc((threshold - mean) / (sd * math.sqrt(2)))


def check_compatible(a: Fingerprint, b: Fingerprint) -> None:
    if a.spec.get("version") != b.spec.get("version"):
        raise FingerprintError(f"fingerprints use different spec versions ({a.spec.get('version')} vs "
                               f"{b.spec.get('version')}); recompute both with the same zkfp")
    for key in ("k", "layers", "m", "encoder"):
        if a.spec.get(key) != b.spec.get(key):
            raise FingerprintError(f"fingerprints differ in spec.{key} ({a.spec.get(key)} vs {b.spec.get(key)})")
    if list(a.token_ids) != list(b.token_ids):
        raise FingerprintError("fingerprints were computed on different token lists; recompute one with the "
                               "other's ids (zkfp fingerprint MODEL --tokens-from OTHER.json)")


def compare(a: Fingerprint, b: Fingerprint) -> dict:
    check_compatible(a, b)
    if a.invariants is not None and b.invariants is not None:
        basis, x, y = "invariants", a.invariant_tensor(), b.invariant_tensor()
    else:
        basis, x, y = "v", torch.tensor(a.v, dtype=torch.float64), torch.tensor(b.v, dtype=torch.float64)
    sim = inv.ics(x, y)
    t = THRESHOLDS[basis]
    verdict = "same-lineage" if sim >= t["related"] else "unrelated" if sim <= t["unrelated"] else "inconclusive"
    v_sim = sim if basis == "v" else inv.ics(torch.tensor(a.v, dtype=torch.float64),
                                             torch.tensor(b.v, dtype=torch.float64))
    return {"similarity": round(sim, 4), "verdict": verdict, "basis": basis,
            "v_similarity": round(v_sim, 4),
            "thresholds": {"related": t["related"], "unrelated": t["unrelated"]},
            "false_positive_rate": implied_fpr(t["related"], t["null_mean"], t["null_sd"]),
            "spec": a.spec.get("version"), "k": a.spec.get("k")}
