"""The fingerprint's math: canonicalisation, invariant terms and z-scoring, as small pure torch
functions (matmuls, elementwise products, sums, mean/std) that `circuits/` can call as they are.

Conventions: weights are in nn.Linear convention `(out, in)`; `X` is the `(k, d)` matrix of
selected embedding rows. Every function is deterministic and free of I/O.

Canonical form (what makes the terms invariant to every function-preserving disguise T1-T6):
- RMSNorm families: the gain of the norm that feeds a matrix is folded into that matrix's
  columns (`W · diag(g)`): attention-input gain into W_q, W_k, W_v; MLP-input gain into
  W_gate, W_up. After that a residual rotation Q acts as X→XQ, W_in→W_in Q, W_out→Qᵀ W_out and
  cancels in every product below.
- LayerNorm families: LN(x) = g ⊙ C x / std(x) + b with C = I − 11ᵀ/d. The input-side matrices
  become `W · diag(g) · C` (gain folded, then each row centred), the output-side matrices
  (W_o, W_down) become `C · W` and the token rows become `X · C`. Anything a disguise adds
  along the all-ones direction of the residual is then removed, and a rotation Q of the
  residual stream is function-preserving exactly when Q·1 = 1, under which these terms are
  invariant. Biases are not used (as in HuRef).
"""

from __future__ import annotations

import torch

from fingerprint.spec import off_diagonal

Tensor = torch.Tensor


# -- canonicalisation ------------------------------------------------------------------------
def center_rows(X: Tensor) -> Tensor:
    """X · C: subtract each row's mean (LayerNorm's centering, without the division)."""
    return X - X.mean(dim=-1, keepdim=True)


def center_cols(W: Tensor) -> Tensor:
    """C · W: subtract each column's mean (for matrices that write into a LayerNorm residual)."""
    return W - W.mean(dim=0, keepdim=True)


def fold_gain(W: Tensor, gain: Tensor, layer_norm: bool = False) -> Tensor:
    """Canonical input-side matrix: W · diag(gain), then (LayerNorm) each row centred: W·diag(g)·C."""
    W = W * gain.to(W.dtype)[None, :]
    return center_rows(W) if layer_norm else W


def canonical_tokens(X: Tensor, layer_norm: bool = False) -> Tensor:
    """Canonical token rows: unchanged for RMSNorm families, centred (X·C) for LayerNorm families."""
    return center_rows(X) if layer_norm else X


def canonical_output(W: Tensor, layer_norm: bool = False) -> Tensor:
    """Canonical output-side matrix (W_o, W_down): C·W for LayerNorm families, W otherwise."""
    return center_cols(W) if layer_norm else W


# -- invariant terms -------------------------------------------------------------------------
def expand_kv(P: Tensor, heads: int, kv_heads: int) -> Tensor:
    """Repeat each KV head's block for the query heads that share it: (k, kv·hd) → (k, heads·hd).

    Block-interleave (head h reads KV head h // (heads/kv_heads)), which is what grouped-query
    attention does. HuRef's tiling (`cat([K]*r)`) is only right for one KV head.
    """
    if heads == kv_heads:
        return P
    if heads % kv_heads:
        raise ValueError(f"heads ({heads}) is not a multiple of kv_heads ({kv_heads})")
    k, width = P.shape
    hd = width // kv_heads
    return P.reshape(k, kv_heads, 1, hd).expand(k, kv_heads, heads // kv_heads, hd).reshape(k, heads * hd)


def term_qk(X: Tensor, Wq: Tensor, Wk: Tensor, heads: int, kv_heads: int) -> Tensor:
    """M_a = Σ_h X W_{q,h}ᵀ W_{k,g(h)} Xᵀ (k×k), head-aligned for grouped-query attention."""
    return (X @ Wq.T) @ expand_kv(X @ Wk.T, heads, kv_heads).T


def term_vo(X: Tensor, Wv: Tensor, Wo: Tensor, heads: int, kv_heads: int) -> Tensor:
    """M_b = Σ_h X W_{v,g(h)}ᵀ W_{o,h}ᵀ Xᵀ (k×k)."""
    return (expand_kv(X @ Wv.T, heads, kv_heads) @ Wo.T) @ X.T


def head_terms(q: Tensor, k: Tensor, v: Tensor, Wo: Tensor, X: Tensor, heads: int) -> Tensor:
    """(H, 2, k, k): per query head h, A_h = X W_{q,h}ᵀ W_{k,g(h)} Xᵀ and B_h = X W_{v,g(h)}ᵀ W_{o,h}ᵀ Xᵀ,
    the summands of M_a and M_b (fingerprint.heads). `q` = X W_qᵀ and `k`, `v` = X W_{k,v}ᵀ already
    expanded to the query heads (expand_kv), all (k, heads·hd); Wo is (d, heads·hd)."""
    n = q.shape[0]
    q, k, v = (t.reshape(n, heads, -1) for t in (q, k, v))  # (k, H, hd)
    # W_o a block of rows at a time, as extract reads weights: a bf16 W_o is never copied whole in fp32
    vo = torch.cat([torch.einsum("khc,rhc->hkr", v, block.to(v.dtype).reshape(len(block), heads, -1))
                    for block in Wo.split(1024)], dim=2)  # (H, k, d)
    return torch.stack([torch.einsum("ihc,jhc->hij", q, k), vo @ X.T], dim=1)


def term_mlp_gated(X: Tensor, Wgate: Tensor, Wup: Tensor, Wdown: Tensor) -> Tensor:
    """M_f = ((X W_gateᵀ) ⊙ (X W_upᵀ)) W_downᵀ Xᵀ: the Hadamard product in neuron space.

    Invariant to residual rotations, neuron permutations and per-neuron scaling (up × c,
    down ÷ c). HuRef's weight-space product X (W_gateᵀ ⊙ W_upᵀ) W_downᵀ Xᵀ is not.
    """
    return ((X @ Wgate.T) * (X @ Wup.T)) @ Wdown.T @ X.T


def term_mlp_plain(X: Tensor, Wup: Tensor, Wdown: Tensor) -> Tensor:
    """M_f = X W_upᵀ W_downᵀ Xᵀ (activation-free, as HuRef; see the fingerprint readme)."""
    return (X @ Wup.T) @ Wdown.T @ X.T


def layer_terms(X: Tensor, q: Tensor, k: Tensor, v: Tensor, o: Tensor, up: Tensor, down: Tensor,
                gate: Tensor | None, heads: int, kv_heads: int) -> Tensor:
    """(3, k, k): M_a, M_b, M_f of one layer from canonical X and canonical weights."""
    m_f = term_mlp_plain(X, up, down) if gate is None else term_mlp_gated(X, gate, up, down)
    return torch.stack([term_qk(X, q, k, heads, kv_heads), term_vo(X, v, o, heads, kv_heads), m_f])


def canonical_layer_terms(X_raw: Tensor, attn_gain: Tensor, q: Tensor, k: Tensor, v: Tensor, o: Tensor,
                          mlp_gain: Tensor, up: Tensor, down: Tensor, gate: Tensor | None,
                          heads: int, kv_heads: int, layer_norm: bool = False) -> Tensor:
    """Canonicalise raw weights (fold gains, centre for LayerNorm) and return the layer's (3, k, k)."""
    X = canonical_tokens(X_raw, layer_norm)
    f = lambda W, g: fold_gain(W, g, layer_norm)  # noqa: E731
    return layer_terms(
        X, f(q, attn_gain), f(k, attn_gain), f(v, attn_gain), canonical_output(o, layer_norm),
        f(up, mlp_gain), canonical_output(down, layer_norm), None if gate is None else f(gate, mlp_gain),
        heads, kv_heads,
    )


# -- normalisation and similarity ------------------------------------------------------------
def zscore(M: Tensor) -> Tensor:
    """(M − mean) / std over all entries of one term (population std, as HuRef)."""
    M = M - M.mean()
    return M / M.pow(2).mean().sqrt().clamp_min(1e-30)


def zscored_terms(terms: Tensor) -> Tensor:
    """(L, 3, k, k) terms → flat vector of each whole term z-scored separately (HuRef's), length 3·L·k²."""
    return torch.cat([zscore(t).reshape(-1) for t in terms.reshape(-1, *terms.shape[-2:])])


def invariant_vector(terms: Tensor) -> Tensor:
    """(L, 3, k, k) terms → the spec's invariants: each term's off-diagonal entries (spec.off_diagonal),
    z-scored separately, length 3·L·k(k−1)."""
    k = terms.shape[-1]
    idx = torch.tensor(off_diagonal(k))
    return torch.cat([zscore(t.reshape(-1)[idx]) for t in terms.reshape(-1, k, k)])


def head_vectors(head_terms: Tensor) -> Tensor:
    """(L, H, 2, k, k) per-head terms → (L, H, 2k(k−1)): each term's off-diagonal entries z-scored
    separately, as the invariants read the sums."""
    k = head_terms.shape[-1]
    idx = torch.tensor(off_diagonal(k))
    terms = head_terms.reshape(-1, k * k)[:, idx]
    return torch.stack([zscore(t) for t in terms]).reshape(*head_terms.shape[:2], -1)


def ics(a: Tensor, b: Tensor) -> float:
    """HuRef's invariant-terms cosine similarity on the 100 × cosine scale."""
    a, b = a.double().reshape(-1), b.double().reshape(-1)
    return float(100.0 * (a @ b) / (a.norm() * b.norm()).clamp_min(1e-300))
