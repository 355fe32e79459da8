"""Invariants → Gaussian vector v ∈ R^m.

Two encoders, both tiny and made of circuit-friendly ops (MatMul, Add, ReLU, a final z-score):
- `gaussian-projection/1` (the spec's encoder): v = zscore(P · z), P a seeded N(0, 1/n)
  matrix (m × n). By Johnson-Lindenstrauss, cos(v, v') ≈ cos(z, z'), and for unrelated models
  the coordinates of P·z are N(0, 1) because P is.
- `mlp/1` (trained by `python -m fingerprint.train_encoder`): v = zscore(W2 relu(W1 z + b1) + b2).
  It is kept for comparison; the benchmark decides which one the spec uses (see the readme).

Weights live in `fingerprint/assets/encoder.safetensors` (keys `projection`, `mlp.w1`, `mlp.b1`,
`mlp.w2`, `mlp.b2`). The projection is also reproducible from its seed; `load_weights` checks
that the shipped one matches.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch

from fingerprint import spec
from fingerprint.invariants import zscore

ASSET = Path(__file__).resolve().parent / "assets" / "encoder.safetensors"


def projection_matrix(n: int, m: int = spec.M_DIM, seed: int = spec.ENCODER_SEED) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(m, n, generator=gen, dtype=torch.float64).float() / n ** 0.5


def project(z: torch.Tensor, P: torch.Tensor) -> torch.Tensor:
    """gaussian-projection/1: zscore(P z)."""
    return zscore(P @ z)


def mlp(z: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor) -> torch.Tensor:
    """mlp/1: zscore(W2 relu(W1 z + b1) + b2)."""
    return zscore(w2 @ torch.relu(w1 @ z + b1) + b2)


@lru_cache(maxsize=4)
def load_weights(path: str = str(ASSET)) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if not Path(path).is_file():
        return {}
    return load_file(path)


def encode(z: torch.Tensor, encoder: str = spec.ENCODER) -> torch.Tensor:
    """The spec's encoder applied to a flat z-scored invariant vector (fp32)."""
    z = z.float().reshape(-1)
    weights = load_weights()
    if encoder == "gaussian-projection/1":
        P = weights.get("projection")
        if P is None or P.shape[1] != z.numel():
            P = projection_matrix(z.numel())
        return project(z, P)
    if encoder == "mlp/1":
        if "mlp.w1" not in weights or weights["mlp.w1"].shape[1] != z.numel():
            raise ValueError("the mlp encoder's weights are missing or for another input size; "
                             "run python -m fingerprint.train_encoder")
        return mlp(z, weights["mlp.w1"], weights["mlp.b1"], weights["mlp.w2"], weights["mlp.b2"])
    raise ValueError(f"unknown encoder {encoder!r}")
