"""The encoder's arithmetic outside the circuit. numpy only.

* `v_from_terms`: v_l = zscore(P · concat_{t in layer l} zscore(off-diagonal M_t)) for each layer, exactly
  `fingerprint.extract` (per-term population z-score, the spec's gaussian-projection encoder,
  z-score per layer): the float reference.
* `inverse_sigmas`: 1/σ_t, computed from the very field elements the terms circuit committed, in
  the encoder circuit's units (see circuits.graph); the prover's private input is its root u_t.
* `v_from_public`: the encoder circuit's public values → (v, checks), for prover and verifier.
"""

from __future__ import annotations

import numpy as np

from fingerprint.spec import off_diagonal  # pure Python

# An honest prover's checks are 1 within ~1e-6 (measured); a per-term factor off by δ moves a
# check by 2δ, so this bounds any prover's freedom over 1/σ_t to a factor within 2^-11 of 1.
CHECK_TOL = 2.0 ** -10
# The BN254 scalar field modulus (ezkl's field).
BN254_R = 0x30644E72E131A029B85045B68181585D2833E84879B9709143E1F593F0000001


def zscore(x: np.ndarray) -> np.ndarray:
    x = x - x.mean()
    return x / max(float(np.sqrt((x * x).mean())), 1e-30)


def v_from_terms(terms, shape, projection: np.ndarray) -> np.ndarray:
    out = np.asarray(terms, dtype=np.float64).reshape(-1)
    kk = shape.k * shape.k
    if out.size != shape.n_terms() * kk:
        raise ValueError(f"expected {shape.n_terms() * kk} term values, got {out.size}")
    off = off_diagonal(shape.k)
    z = np.stack([zscore(out[i * kk:(i + 1) * kk][off]) for i in range(shape.n_terms())]).reshape(len(shape.layers), -1)
    P = np.asarray(projection, dtype=np.float64)
    if P.shape != (shape.m, z.shape[1]):
        raise ValueError(f"encoder projection has shape {P.shape}, expected {(shape.m, z.shape[1])}")
    return np.concatenate([zscore(P @ z_l) for z_l in z])


def felts_to_ints(felts: list[str]) -> list[int]:
    """ezkl field elements (32-byte little-endian hex) as signed integers."""
    out = []
    for f in felts:
        v = int.from_bytes(bytes.fromhex(f), "little")
        out.append(v - BN254_R if v > BN254_R // 2 else v)
    return out


def ints_to_felts(values: list[int]) -> list[str]:
    """Signed integers as ezkl field elements (32-byte little-endian hex)."""
    return [(v % BN254_R).to_bytes(32, "little").hex() for v in values]


def inverse_sigmas(term_felts: list[str], shape) -> np.ndarray:
    """1/‖c_t‖ for each term, c_t = (M_t − mean)/2^shift over its off-diagonal entries, with M read
    at the encoder's input scale."""
    M = np.array(felts_to_ints(term_felts), dtype=np.float64) / 2.0 ** (shape.enc_input_scale + shape.term_shift)
    c = M.reshape(shape.n_terms(), -1)[:, off_diagonal(shape.k)]
    c = c - c.mean(axis=1, keepdims=True)
    norms = np.sqrt((c * c).sum(axis=1))
    if not np.all(norms > 0):
        raise ValueError("a fingerprint term is constant: its z-score is undefined")
    return 1.0 / norms


def term_scale_problem(term_felts: list[str], shape) -> str | None:
    """Why the encoder circuit cannot encode these terms exactly (None when it can)."""
    from circuits.spec import TERM_STD_RANGE

    M = np.array(felts_to_ints(term_felts), dtype=np.float64).reshape(shape.n_terms(), -1) / 2.0 ** 60
    lo, hi = TERM_STD_RANGE
    stds = M.std(axis=1)
    if np.all((stds >= lo) & (stds <= hi)):
        return None
    return (f"the fingerprint terms' standard deviations ({', '.join(f'{x:.3g}' for x in stds)}) leave the "
            f"window the encoder circuit encodes exactly ({lo:.3g} to {hi:.3g})")


def v_from_public(values, shape, layers: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(v, checks) from an encoder circuit's public values (of `layers` layers, default all), decoded to floats."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    layers = len(shape.layers) if layers is None else layers
    n_v = shape.m * layers
    if values.size != n_v + 3 * layers:
        raise ValueError(f"expected {n_v + 3 * layers} public values, got {values.size}")
    return np.concatenate([zscore(y) for y in values[:n_v].reshape(-1, shape.m)]), values[n_v:]
