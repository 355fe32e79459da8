"""From the circuit's public outputs (the raw invariant terms) to v. numpy only.

v = zscore(P · concat_t zscore(M_t)): exactly `fingerprint.extract` (per-term population
z-score, the spec's gaussian-projection encoder, final z-score), recomputed by the verifier.
"""

from __future__ import annotations

import numpy as np


def n_outputs(shape) -> int:
    return 3 * len(shape.layers) * shape.k * shape.k


def zscore(x: np.ndarray) -> np.ndarray:
    x = x - x.mean()
    return x / max(float(np.sqrt((x * x).mean())), 1e-30)


def v_from_terms(terms, shape, projection: np.ndarray) -> np.ndarray:
    out = np.asarray(terms, dtype=np.float64).reshape(-1)
    if out.size != n_outputs(shape):
        raise ValueError(f"expected {n_outputs(shape)} circuit outputs, got {out.size}")
    kk = shape.k * shape.k
    z = np.concatenate([zscore(out[i * kk:(i + 1) * kk]) for i in range(3 * len(shape.layers))])
    P = np.asarray(projection, dtype=np.float64)
    if P.shape != (shape.m, z.size):
        raise ValueError(f"encoder projection has shape {P.shape}, expected {(shape.m, z.size)}")
    return zscore(P @ z)
