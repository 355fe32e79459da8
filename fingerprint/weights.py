"""Compare two models by their weights, once the suspect's residual basis is aligned to the published one's.

For when both sides' weights are at hand: the published Taylor release (or checkpoint) and a
suspect model. The invariant terms read each model through 16 token rows, i.e. through what
the model computes on them, and models trained on the same text compute much the same thing:
on the zoo's GPT-2 seed twins that function-level likeness scores as high as 5× continued
pretraining of one model (README, "Fingerprints"). The weights themselves keep far more
of their lineage (a 5×-trained GPT-2 keeps cosine 0.7-0.9 with its base, seed twins ≈ 0), but
a disguise rotates the residual basis, so the bases are aligned first:

1. Procrustes on the embeddings. The rows of the ids both vocabularies have (`shared_rows`; the
   suspect's rows of the same token strings where it numbers its vocabulary otherwise, see
   `fingerprint.tokens`), canonical as for the invariants (centred for LayerNorm families), give the
   orthogonal Q minimising ‖E_suspect·Q − E_published‖ (SVD of E_suspectᵀ·E_published).
2. Per layer, three d×d forms that every other function-preserving disguise leaves unchanged:
   A = Σ_h W_q,hᵀ W_k,h (per-head Q/K mixing cancels), B = Σ_h W_v,hᵀ W_o,hᵀ (V/O mixing
   cancels) and F = W_upᵀ W_downᵀ (neuron permutation and per-neuron scaling cancel), from the
   canonical weights (gains folded, LayerNorm centring) as in `fingerprint.invariants`. The
   suspect's are moved into the published basis, Qᵀ·M·Q.
3. Both sides' forms are whitened by the published rows' second moment C: T·M·T with T = C^(-1/2).
   Models trained on the same text converge on the same function, and after alignment their
   forms agree mostly in the few directions the token rows occupy most (the text's); what
   training leaves of the initialisation, i.e. of the lineage, is spread over every direction.
   On the zoo's GPT-2 seed twins (hidden 64) the aligned forms score 30-36 unwhitened, 49-59 on
   the top quarter of the directions alone and 5-10 on the bottom quarter; whitened, 6-10, while
   continued pretraining keeps 96 and 5× continued pretraining 56 (README, "Fingerprints").
4. Each form is sketched to d×r by one seeded Gaussian matrix (exact for d ≤ r; for larger
   models it keeps the memory at r/d of the forms'), z-scored, and a layer's three are
   concatenated. Layers are aligned and scored as `fingerprint.compare` does for fingerprints.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from fingerprint import compare as C
from fingerprint import sources
from fingerprint import fpjson
from fingerprint import invariants as inv
from fingerprint import spec
from fingerprint import tokens as token_strings
from zkfp.errors import FingerprintError

MAX_ROWS = 16384     # embedding rows used for the Procrustes alignment
SKETCH = 256         # r: columns kept of each d×d form
SKETCH_SEED = 20251130
WHITEN_FLOOR = 1e-6  # eigenvalues below this fraction of the largest count as directions the rows do not span


def shared_rows(vocab: int, hidden: int) -> range:
    """The token ids whose rows align the bases: above the byte/special ids (TOKEN_LO, as the
    fingerprint's token choice) when the shared vocabulary leaves at least 2·hidden rows there."""
    lo = spec.TOKEN_LO if vocab >= spec.TOKEN_LO + 2 * hidden else 0
    return range(lo, min(vocab, lo + MAX_ROWS))


def _rows(src, ids: list[int]) -> torch.Tensor:
    return inv.canonical_tokens(src.embedding_rows(ids), src.arch.family.norm == "layer")


def procrustes(suspect_rows: torch.Tensor, published_rows: torch.Tensor) -> torch.Tensor:
    """The orthogonal Q minimising ‖suspect_rows·Q − published_rows‖ (Schönemann's solution)."""
    U, _, Vh = torch.linalg.svd((suspect_rows.T @ published_rows).double())
    return (U @ Vh).to(suspect_rows.dtype)


def sketch(d: int, r: int | None = None) -> torch.Tensor:
    """(d, r) seeded Gaussian sketch (r = SKETCH by default), or the identity when d ≤ r (exact)."""
    r = SKETCH if r is None else r
    if d <= r:
        return torch.eye(d, dtype=sources.DTYPE)
    gen = torch.Generator().manual_seed(SKETCH_SEED)
    return torch.randn(d, r, generator=gen, dtype=sources.DTYPE) / r ** 0.5


def layer_forms(src, i: int, R: torch.Tensor) -> list[torch.Tensor]:
    """A·R, B·R and F·R of layer i (d×r each), from the canonical weights, never forming a d×d matrix."""
    d = src.arch.dims
    layer_norm = src.arch.family.norm == "layer"
    ga, gm = src.attn_gain(i), src.mlp_gain(i)  # fp32, as the fingerprint computes

    def w(role: str) -> torch.Tensor:
        return src.weight(role, i).to(sources.DTYPE)

    def inp(W: torch.Tensor, g: torch.Tensor) -> torch.Tensor:  # canonical input side, (out, d)
        return inv.fold_gain(W, g, layer_norm)

    def heads(W: torch.Tensor) -> torch.Tensor:  # (kv·hd, d) → (heads·hd, d): the KV head each query head reads
        return inv.expand_kv(W.T, d.heads, d.kv_heads).T

    q, k, v = inp(w("q"), ga), heads(inp(w("k"), ga)), heads(inp(w("v"), ga))
    o, down = inv.canonical_output(w("o"), layer_norm), inv.canonical_output(w("down"), layer_norm)
    up = inp(w("up"), gm)
    src.release()
    return [q.T @ (k @ R), v.T @ (o.T @ R), up.T @ (down.T @ R)]


def whitening(rows: torch.Tensor) -> torch.Tensor:
    """C^(-1/2) of the rows' second moment C = rowsᵀ·rows / n (pseudo-inverse: the directions the rows
    do not span, e.g. the all-ones one of centred LayerNorm rows, get 0), symmetric, d×d."""
    C_ = (rows.T.double() @ rows.double()) / rows.shape[0]
    ev, U = torch.linalg.eigh(C_)
    keep = ev > ev.max() * WHITEN_FLOOR
    scale = torch.where(keep, ev, 1.0).rsqrt() * keep
    return ((U * scale) @ U.T).to(rows.dtype)


def layer_vectors(src, basis: torch.Tensor, R: torch.Tensor) -> np.ndarray:
    """(L, 3·d·r): each layer's three forms M taken into the compared coordinates, Bᵀ·M·B (B =
    `basis`), sketched by R, z-scored. Never forms a d×d M: Bᵀ·(M·(B·R))."""
    BR, rows = basis @ R, []
    for i in range(src.arch.dims.layers):
        forms = [basis.T @ f for f in layer_forms(src, i, BR)]
        rows.append(torch.cat([inv.zscore(f).reshape(-1) for f in forms]).float().numpy())
    return np.stack(rows)


def compare_weights(published: str | os.PathLike, suspect: str | os.PathLike) -> dict:
    """`fingerprint.compare.compare`'s result on the "weights" basis for two model or release folders."""
    for path in (published, suspect):
        if not Path(path).is_dir() or fpjson.is_bundle(path):
            raise FingerprintError(f"weights are compared between two model or release folders and {path} is not "
                                   "one: the suspect must be a model or release folder too when the published side "
                                   "is (to compare with an FP.json or bundle, give the published FP.json or bundle)")
    a, b = sources.open_source(published), sources.open_source(suspect)
    da, db = a.arch.dims.hidden, b.arch.dims.hidden
    if da != db:
        raise FingerprintError(f"the models' hidden sizes differ ({da} vs {db}): their weights cannot be "
                               "aligned; compare fingerprints instead (zkfp fingerprint, then zkfp compare FP.json ...)")
    ids_a, ids_b = token_strings.matched_ids(published, suspect, list(shared_rows(min(a.vocab(), b.vocab()), da)))
    if len(ids_a) < da:
        raise FingerprintError(f"the models share only {len(ids_a)} token rows for a hidden size of {da}: too few "
                               "to align their bases")
    rows_a, rows_b = _rows(a, ids_a), _rows(b, ids_b)
    Q = procrustes(rows_b, rows_a)
    residual = float((rows_b @ Q - rows_a).norm() / rows_a.norm())
    T = whitening(rows_a)
    a.release()
    b.release()
    R = sketch(da)
    S = C.layer_similarities(layer_vectors(a, T, R), layer_vectors(b, Q @ T, R))
    mlp = "gated" if a.has_gate() else "plain"
    return {**C.scored(S, "weights", C.thresholds({"mlp": mlp}, "weights")),
            "mlp": mlp, "alignment_residual": round(residual, 4)}  # ‖E_s·Q − E_p‖ / ‖E_p‖: how well the bases matched
