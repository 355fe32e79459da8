"""Invariants → Gaussian vectors, one per layer: v_l = zscore(P · z_l), v = concat_l v_l.

`gaussian-projection/2` (the spec's encoder): P is a seeded N(0, 1/n) matrix (m × n, n = 3k(k−1),
one layer's invariants), the same for every layer. By Johnson-Lindenstrauss cos(v_l, v'_j) ≈
cos(z_l, z'_j), so any layer of one model can be compared with any layer of another, which is
what lets `fingerprint.compare` align the layers of a pruned or deepened offspring with its
base's. For unrelated models the coordinates of P·z_l are N(0, 1) because P is.

P ships in `fingerprint/assets/encoder.safetensors` (key `projection`) so that the verifier can
read it with numpy (circuits.projection); `projection_matrix` regenerates it from its seed, and a
test checks that the two agree.
"""

from __future__ import annotations

from pathlib import Path

import torch

from fingerprint import spec
from fingerprint.invariants import zscore

ASSET = Path(__file__).resolve().parent / "assets" / "encoder.safetensors"  # read by circuits.projection


def projection_matrix(n: int = spec.layer_length(), m: int = spec.M_DIM, seed: int = spec.ENCODER_SEED) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(m, n, generator=gen, dtype=torch.float64).float() / n ** 0.5


def project(z: torch.Tensor, P: torch.Tensor) -> torch.Tensor:
    """(L, n) per-layer invariants → (L, m): zscore(P z_l) for each layer."""
    return torch.stack([zscore(P @ z_l) for z_l in z.reshape(-1, P.shape[1])])


def encode(z: torch.Tensor) -> torch.Tensor:
    """The spec's encoder applied to a flat z-scored invariant vector (all layers): flat v, fp32."""
    from circuits.projection import load_projection  # the one reader of the shipped P (numpy)

    z = z.float().reshape(-1)
    n = spec.layer_length()
    if z.numel() % n:
        raise ValueError(f"invariants of {z.numel()} values are not whole layers of {n}")
    P = torch.from_numpy(load_projection(spec.K_TOKENS, spec.M_DIM)).float()
    return project(z, P).reshape(-1)


def write_asset(path: Path = ASSET) -> None:
    """Regenerate the shipped projection from its seed (run when the spec's k or m changes)."""
    from safetensors.torch import save_file

    save_file({"projection": projection_matrix().contiguous()}, str(path))
