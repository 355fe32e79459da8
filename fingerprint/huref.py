"""HuRef's fingerprint exactly as its code computes it: the baseline the zoo scores ours against.

Zeng et al., "HuRef: HUman-REadable Fingerprint for Large Language Models" (NeurIPS 2024): three
invariant terms on the token rows X of the last two blocks, from the raw weights (no gain folding),
K/V tiled for GQA, the gated MLP through the weight-space product W_gateᵀ ⊙ W_upᵀ. README,
"Fingerprints", says where and why zkfp departs from each of these.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

from fingerprint.invariants import zscored_terms


def huref_mlp_gated(X: Tensor, Wgate: Tensor, Wup: Tensor, Wdown: Tensor) -> Tensor:
    """HuRef's original gated term X (W_gateᵀ ⊙ W_upᵀ) W_downᵀ Xᵀ (baseline only; not rotation invariant)."""
    return X @ (Wgate.T * Wup.T) @ Wdown.T @ X.T


def huref_terms(X: Tensor, q: Tensor, k: Tensor, v: Tensor, o: Tensor, up: Tensor, down: Tensor,
                gate: Tensor | None, heads: int, kv_heads: int) -> Tensor:
    """HuRef's terms exactly as its code computes them: raw weights, no folding, K/V tiled with cat."""
    r = heads // kv_heads
    k_t, v_t = torch.cat([k] * r), torch.cat([v] * r)
    m_f = X @ up.T @ down.T @ X.T if gate is None else huref_mlp_gated(X, gate, up, down)
    return torch.stack([X @ q.T @ k_t @ X.T, X @ v_t.T @ o.T @ X.T, m_f])


def huref_vector(path: str | os.PathLike, token_ids: list[int], layers: int = 2) -> torch.Tensor:
    """HuRef's invariant vector of the last `layers` blocks of a checkpoint, z-scored per term, flat (float64)."""
    from zkfp.architectures import ModelReader
    from zkfp.checkpoint import Checkpoint

    r = ModelReader(Checkpoint(path))
    d = r.arch.dims
    X = r.ckpt.get_rows(r.embedding_key(), token_ids, torch.float64)
    out = []
    for i in range(d.layers - layers, d.layers):
        w = r.layer(i, torch.float64)
        out.append(huref_terms(X, w.q.weight, w.k.weight, w.v.weight, w.o.weight, w.up.weight, w.down.weight,
                               None if w.gate is None else w.gate.weight, d.heads, d.kv_heads))
    return zscored_terms(torch.stack(out))
