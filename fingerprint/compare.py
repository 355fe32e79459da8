"""Compare two fingerprints: HuRef's 100 × cosine similarity and a calibrated verdict. numpy only.

Similarity is taken on the invariant vectors when both files carry them, on v otherwise.
Thresholds come from the zoo benchmark (`benchmarks/fingerprint_zoo.py`, see the
fingerprint readme). A similarity at or above `related` says same-lineage, at or below
`unrelated` says unrelated, in between is inconclusive. `false_positive_rate` is the rate
implied at the `related` threshold by a Gaussian fitted to the zoo's unrelated pairs
(one-sided); the zoo itself had no unrelated pair above it.
"""

from __future__ import annotations

import math

import numpy as np

from fingerprint.fpjson import Fingerprint
from zkfp.errors import FingerprintError

# Calibrated on the zoo (benchmarks/fingerprint_zoo.py, spec tokens, 121 related / 285 unrelated
# pairs): `related` sits above every unrelated pair, `unrelated` below every related pair;
# null_mean/null_sd describe the unrelated pairs (Gaussian null model for the implied FPR).
THRESHOLDS = {
    "invariants": {"related": 75.0, "unrelated": 50.0, "null_mean": 16.2, "null_sd": 15.2},
    "v": {"related": 85.0, "unrelated": 45.0, "null_mean": 2.3, "null_sd": 24.1},
}
SPEC_KEYS = ("version", "k", "layers", "m", "encoder")  # what two comparable fingerprints share


def implied_fpr(threshold: float, mean: float, sd: float) -> float:
    """P(N(mean, sd²) ≥ threshold): the false-positive rate of the Gaussian null at a threshold."""
    return 0.5 * math.erfc((threshold - mean) / (sd * math.sqrt(2)))


def similarities(rows: np.ndarray, x: np.ndarray) -> np.ndarray:
    """100 × cosine of each row of `rows` with `x` (HuRef's ICS scale), in float64."""
    rows, x = np.atleast_2d(np.asarray(rows)), np.asarray(x, dtype=np.float64).reshape(-1)
    dots = rows @ x.astype(rows.dtype)
    norms = np.linalg.norm(rows, axis=1) * np.linalg.norm(x)
    return 100.0 * dots.astype(np.float64) / np.maximum(norms.astype(np.float64), 1e-300)


def verdicts(sim: np.ndarray, basis: str) -> list[str]:
    """same-lineage / inconclusive / unrelated for similarities on `basis` ("invariants" or "v")."""
    t = THRESHOLDS[basis]
    return ["same-lineage" if s >= t["related"] else "unrelated" if s <= t["unrelated"] else "inconclusive"
            for s in np.atleast_1d(sim)]


def null_z(sim: np.ndarray, basis: str) -> np.ndarray:
    """Standard deviations above the unrelated pairs' mean: one scale for invariant and v scores."""
    t = THRESHOLDS[basis]
    return (np.asarray(sim, dtype=np.float64) - t["null_mean"]) / t["null_sd"]


def spec_mismatch(a: dict, b: dict) -> str | None:
    """Why fingerprints under specs `a` and `b` cannot be compared, or None."""
    if a.get("version") != b.get("version"):
        return (f"fingerprints use different spec versions ({a.get('version')} vs {b.get('version')}); "
                "recompute both with the same zkfp")
    for key in SPEC_KEYS[1:]:
        if a.get(key) != b.get(key):
            return f"fingerprints differ in spec.{key} ({a.get(key)} vs {b.get(key)})"
    return None


def check_compatible(a: Fingerprint, b: Fingerprint) -> None:
    reason = spec_mismatch(a.spec, b.spec)
    if reason:
        raise FingerprintError(reason)
    if list(a.token_ids) != list(b.token_ids):
        raise FingerprintError("fingerprints were computed on different token lists; compare a model folder "
                               "(zkfp compare PUBLISHED MODEL_DIR fingerprints it on PUBLISHED's tokens)")


def compare(a: Fingerprint, b: Fingerprint) -> dict:
    check_compatible(a, b)
    v_sim = float(similarities(np.asarray(a.v, dtype=np.float64), np.asarray(b.v, dtype=np.float64))[0])
    if a.invariants is not None and b.invariants is not None:
        basis = "invariants"
        sim = float(similarities(np.asarray(a.invariants, dtype=np.float64), np.asarray(b.invariants))[0])
    else:
        basis, sim = "v", v_sim
    t = THRESHOLDS[basis]
    return {"similarity": round(sim, 4), "verdict": verdicts(sim, basis)[0], "basis": basis,
            "v_similarity": round(v_sim, 4),
            "thresholds": {"related": t["related"], "unrelated": t["unrelated"]},
            "false_positive_rate": implied_fpr(t["related"], t["null_mean"], t["null_sd"]),
            "spec": a.spec.get("version"), "k": a.spec.get("k")}
