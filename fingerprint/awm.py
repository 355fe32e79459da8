"""AWM's weight-matrix similarity, the second baseline the zoo scores zkfp against (HuRef's is the first).

Zeng et al., "AWM: Accurate Weight-Matrix Fingerprint for Large Language Models" (ICLR 2026,
arXiv 2510.06738), as its paper and public script describe it:

1. The residual dimensions are matched by a linear assignment on the embeddings: over the tokens
   both vocabularies have, the cost of pairing a published column with a suspect column is
   1 − |cos| of the two. This undoes a permutation of the residual stream and sign flips (not a
   rotation: the zoo's disguised model is where that shows).
2. Per layer, the unbiased linear CKA of the matched W_q, and of W_k, with the residual
   dimensions as the samples (Gram matrices WᵀW, d×d), so any orthogonal map and scale on the
   output side cancel. A layer scores the mean of the two. Raw weights: no gains folded (outputs
   sketched as the weights comparison's gauge sketches them, exact up to 256).

The unbiased CKA is the unbiased HSIC estimator of Song et al. (JMLR 2012) normalised as CKA
(Kornblith et al., ICML 2019). Departure: layers are aligned as zkfp aligns them
(`fingerprint.compare`), so that depth changes cost this baseline no more than they cost zkfp.
"""

from __future__ import annotations

import os

import numpy as np

from fingerprint import compare as C
from fingerprint import sources
from fingerprint import tokens as token_strings
from zkfp.errors import FingerprintError


def unbiased_hsic(A: np.ndarray, B: np.ndarray) -> float:
    """Song et al.'s unbiased HSIC of the linear kernels K = A·Aᵀ and L = B·Bᵀ of two (n, ·) feature
    matrices with the same n samples (n > 3), their diagonals ignored; from the features, so that no
    n×n matrix is formed (n is the hidden size: 4,096 for a 7B)."""
    n = A.shape[0]
    dk, dl = np.einsum("ij,ij->i", A, A), np.einsum("ij,ij->i", B, B)  # diagonals of K and L
    k1, l1 = A @ A.sum(axis=0) - dk, B @ B.sum(axis=0) - dl  # K̃·1 and L̃·1
    trace = float(np.sum((A.T @ B) ** 2) - dk @ dl)  # tr(K̃·L̃)
    return (trace + k1.sum() * l1.sum() / ((n - 1) * (n - 2)) - 2.0 * float(k1 @ l1) / (n - 2)) / (n * (n - 3))


def unbiased_cka(X: np.ndarray, Y: np.ndarray) -> float:
    """Linear CKA of two (n, ·) matrices with the same n samples (rows), from the unbiased HSIC, in float64."""
    X, Y = np.asarray(X, dtype=np.float64), np.asarray(Y, dtype=np.float64)
    return unbiased_hsic(X, Y) / float(np.sqrt(unbiased_hsic(X, X) * unbiased_hsic(Y, Y)))


def match_dimensions(published_rows: np.ndarray, suspect_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The suspect's column and sign for each published residual dimension: the linear assignment
    that minimises Σ (1 − |cos|) between paired embedding columns (rows: the same tokens)."""
    from scipy.optimize import linear_sum_assignment

    a = published_rows / np.linalg.norm(published_rows, axis=0)
    b = suspect_rows / np.linalg.norm(suspect_rows, axis=0)
    cos = a.T @ b
    rows, cols = linear_sum_assignment(1.0 - np.abs(cos))
    return cols[np.argsort(rows)], np.sign(cos[rows, cols])[np.argsort(rows)]


def awm_similarity(published: str | os.PathLike, suspect: str | os.PathLike) -> float:
    """100 × AWM's similarity of two model folders of one hidden size, layers aligned. The features are
    the weights comparison's gauge features (`fingerprint.weights.gauge_features`) of the raw W_q, W_k."""
    from fingerprint.weights import gauge_features, shared_rows, signed_permutation, sketch  # zkfp's rows, too

    a, b = sources.open_source(published), sources.open_source(suspect)
    d = a.arch.dims.hidden
    if b.arch.dims.hidden != d:
        raise FingerprintError(f"AWM's baseline compares models of one hidden size ({d} vs {b.arch.dims.hidden})")
    ids_a, ids_b = token_strings.matched_ids(published, suspect, list(shared_rows(min(a.vocab(), b.vocab()), d)))
    match = signed_permutation(b.embedding_rows(ids_b), a.embedding_rows(ids_a))
    layers = []
    for src, m in ((a, None), (b, match)):
        ws = [[src.weight(role, i).to(sources.DTYPE) for role in ("q", "k")] for i in range(src.arch.dims.layers)]
        src.release()
        R = {rows: sketch(rows) for rows in {w.shape[0] for layer in ws for w in layer}}  # q's and k's output sizes
        layers.append([[gauge_features(w, R[w.shape[0]], m) for w in layer] for layer in ws])
    S = np.array([[100.0 * np.mean([unbiased_cka(x, y) for x, y in zip(la, lb)]) for lb in layers[1]]
                  for la in layers[0]])
    return float(C.aligned_scores(S[None])[0])
