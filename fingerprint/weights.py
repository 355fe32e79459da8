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
5. The gauge, as one-sided evidence. The forms are products in which the factorisation cancels
   (W_qᵀW_k is the same for M·W_q and M⁻ᵀ·W_k): that is what makes them immune to disguises, and it
   throws away what a derivative keeps best, since training from one initialisation keeps its
   factors while a seed twin reaches similar products with other ones. AWM (Zeng et al., ICLR
   2026; `fingerprint.awm`) reads the factors: the residual dimensions matched by a linear
   assignment on the embeddings (a signed permutation, exact for an undisguised derivative, which
   lives in its base's coordinates), then the unbiased CKA of W_q and of W_k with those dimensions
   as the samples. Here on the canonical weights, outputs sketched by one seeded matrix, on the
   layer pairs the forms matched.
   A disguise re-draws the factors (per-head mixing) or rotates the basis, so a low gauge says
   nothing; a high one does not come from an unrelated model (README: its null over every
   population). So the verdict is same-lineage when the forms or the gauge reach their `related`,
   unrelated only on the forms (`verdict`).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch

from fingerprint import awm
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
GAUGE_ROLES = ("q", "k")  # the matrices whose gauge is compared (AWM's)
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


def canonical_weights(src, i: int) -> dict[str, torch.Tensor]:
    """Layer i's q, k, v (K/V heads expanded to the query heads they serve), o, up and down, canonical
    as for the invariants: gains folded into the readers, LayerNorm centring on both sides."""
    d = src.arch.dims
    layer_norm = src.arch.family.norm == "layer"
    ga, gm = src.attn_gain(i), src.mlp_gain(i)  # fp32, as the fingerprint computes

    def w(role: str) -> torch.Tensor:
        return src.weight(role, i).to(sources.DTYPE)

    def inp(W: torch.Tensor, g: torch.Tensor) -> torch.Tensor:  # canonical input side, (out, d)
        return inv.fold_gain(W, g, layer_norm)

    def heads(W: torch.Tensor) -> torch.Tensor:  # (kv·hd, d) → (heads·hd, d): the KV head each query head reads
        return inv.expand_kv(W.T, d.heads, d.kv_heads).T

    out = {"q": inp(w("q"), ga), "k": heads(inp(w("k"), ga)), "v": heads(inp(w("v"), ga)),
           "o": inv.canonical_output(w("o"), layer_norm), "up": inp(w("up"), gm),
           "down": inv.canonical_output(w("down"), layer_norm)}
    src.release()
    return out


def signed_permutation(suspect_rows: torch.Tensor, published_rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The suspect's column and sign for each published residual dimension (suspect_rows[:, cols]·signs ≈
    published_rows): AWM's linear assignment (`fingerprint.awm.match_dimensions`)."""
    cols, signs = awm.match_dimensions(published_rows.double().numpy(), suspect_rows.double().numpy())
    return torch.as_tensor(cols), torch.as_tensor(signs, dtype=suspect_rows.dtype)


def whitening(rows: torch.Tensor) -> torch.Tensor:
    """C^(-1/2) of the rows' second moment C = rowsᵀ·rows / n (pseudo-inverse: the directions the rows
    do not span, e.g. the all-ones one of centred LayerNorm rows, get 0), symmetric, d×d."""
    C_ = (rows.T.double() @ rows.double()) / rows.shape[0]
    ev, U = torch.linalg.eigh(C_)
    keep = ev > ev.max() * WHITEN_FLOOR
    scale = torch.where(keep, ev, 1.0).rsqrt() * keep
    return ((U * scale) @ U.T).to(rows.dtype)


def layer_vectors(src, basis: torch.Tensor, R: torch.Tensor, match=None) -> tuple[np.ndarray, list]:
    """Each layer's three forms M taken into the compared coordinates, Bᵀ·M·B (B = `basis`), sketched by R
    and z-scored, as one (L, 3·d·r) array; and each layer's gauge features (`gauge_features`, the
    suspect's matched by `match`). One read of each layer; never a d×d M: Bᵀ·(M·(B·R))."""
    BR, forms, gauge = basis @ R, [], []
    R_out = sketch(src.arch.dims.heads * src.arch.dims.head_dim)  # the gauge's: q and the expanded k have these rows
    for i in range(src.arch.dims.layers):
        w = canonical_weights(src, i)
        A, B, F = w["q"].T @ (w["k"] @ BR), w["v"].T @ (w["o"].T @ BR), w["up"].T @ (w["down"].T @ BR)
        forms.append(torch.cat([inv.zscore(basis.T @ f).reshape(-1) for f in (A, B, F)]).float().numpy())
        gauge.append([gauge_features(w[role], R_out, match) for role in GAUGE_ROLES])
    return np.stack(forms), gauge


def gauge_features(W: torch.Tensor, R_out: torch.Tensor, match: tuple[torch.Tensor, torch.Tensor] | None) -> np.ndarray:
    """(d, r): W's input dimensions (CKA's samples; the suspect's taken to the published ones by
    `match`, a `signed_permutation`), its output side sketched by R_out (`sketch` of W's row count:
    one seed for both models, so outputs that correspond stay together)."""
    X = W.T @ R_out
    if match is not None:
        cols, signs = match
        X = X[cols] * signs[:, None]
    return X.numpy()  # float32 (a 7B's: 0.25 GiB a side); the CKA runs in float64


def gauge_score(published: list, suspect: list, aligned: list) -> float:
    """100 × the unbiased CKA of the gauge features, the mean over GAUGE_ROLES, on the layer pairs the
    forms matched (`aligned`: the disguise-proof alignment, and L pairs rather than L²), summed and
    divided by √(La·Lb) as the forms' score is."""
    total = sum(np.mean([awm.unbiased_cka(x, y) for x, y in zip(published[i], suspect[j])]) for i, j, _ in aligned)
    return 100.0 * float(total) / math.sqrt(len(published) * len(suspect))


def verdict(similarity: float, gauge: float, mlp: str, tied: bool = False) -> str:
    """The weights' verdict: the forms' (two-sided: `weights` thresholds), made same-lineage when the
    gauge reaches its `related` threshold. One-sided: a disguise re-draws the gauge, so a low gauge
    says nothing, while an unrelated model does not share one (module docstring)."""
    forms = C.verdicts(similarity, C.thresholds({"mlp": mlp}, "weights", tied))[0]
    return "same-lineage" if gauge >= C.thresholds({"mlp": mlp}, "gauge", tied)["related"] else forms


def compare_weights(published: str | os.PathLike, suspect: str | os.PathLike) -> dict:
    """`fingerprint.compare.compare`'s result on the "weights" basis for two model or release folders,
    with the gauge's score beside it (`gauge`) and the verdict of both (`verdict`)."""
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
    match = signed_permutation(rows_b, rows_a)
    residual = float((rows_b @ Q - rows_a).norm() / rows_a.norm())
    T = whitening(rows_a)
    a.release()
    b.release()
    R = sketch(da)
    forms_a, gauge_a = layer_vectors(a, T, R)
    forms_b, gauge_b = layer_vectors(b, Q @ T, R, match)
    mlp = "gated" if a.has_gate() else "plain"
    tied = a.arch.tied_embeddings or b.arch.tied_embeddings  # either side: as compare.tied
    result = C.scored(C.layer_similarities(forms_a, forms_b), "weights", C.thresholds({"mlp": mlp}, "weights", tied))
    gauge = gauge_score(gauge_a, gauge_b, result["layers"]["aligned"])
    return {**result, "verdict": verdict(result["similarity"], gauge, mlp, tied), "forms_verdict": result["verdict"],
            "gauge": round(gauge, 4), "gauge_related": C.thresholds({"mlp": mlp}, "gauge", tied)["related"],
            "mlp": mlp, "tied": tied,
            "alignment_residual": round(residual, 4)}  # ‖E_s·Q − E_p‖ / ‖E_p‖: how well the bases matched
