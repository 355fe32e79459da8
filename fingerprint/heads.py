"""Per-head invariants: each attention head's two terms kept apart, compared by matching heads.

M_a and M_b are sums over attention heads (fingerprint.invariants). A head's own summands,

    A_h = X W_{q,h}ᵀ W_{k,g(h)} Xᵀ    and    B_h = X W_{v,g(h)}ᵀ W_{o,h}ᵀ Xᵀ    (k×k, g(h) its KV head),

are invariant to every disguise the sums are (residual rotations act on X and cancel; a head's
internal basis cancels inside W_qᵀW_k and W_vᵀW_o), except that a permutation of the heads
permutes them. So a model's heads are a set, compared by the one-to-one matching of heads that
maximises their summed cosine (a linear assignment).

Why keep them apart: with the output head tied to the embedding, X·W·Xᵀ of a layer is a direct
path from one token's embedding to another token's logit, so the sums over heads hold the text's
bigram statistics, which seed twins trained on the same text share (README: tied heads). How a
layer splits that work over its heads depends on where training started and survives
fine-tuning and structural derivations. And the part every head of a model has in common
(the model-wide mean of each term's vectors, the shared statistics) is removed before comparing.

numpy and scipy only (scipy's linear_sum_assignment); no torch.
"""

from __future__ import annotations

import math

import numpy as np

TERMS_PER_HEAD = 2  # A_h, B_h


def centred(heads: np.ndarray, terms: int = TERMS_PER_HEAD) -> np.ndarray:
    """(L, H, terms·n) z-scored head vectors → each term's part with the model's mean direction of
    that term (over all its layers and heads) projected out, then each head vector scaled to unit
    norm: what is left is how the model's heads differ from one another. (`terms` = 1 for vectors
    that mix a head's terms, as a projection of them does.)"""
    heads = np.array(heads, dtype=np.float64)
    n = heads.shape[-1] // terms
    shared = heads.shape[0] * heads.shape[1] > 1  # a single head has nothing to set it against
    for t in range(terms if shared else 0):
        part = heads[..., t * n:(t + 1) * n]
        mean = part.reshape(-1, n).mean(axis=0)
        norm = np.linalg.norm(mean)
        if norm > 0:
            part -= (part @ (mean / norm))[..., None] * (mean / norm)
    return heads / np.maximum(np.linalg.norm(heads, axis=-1, keepdims=True), 1e-300)


def matched(S: np.ndarray) -> float:
    """Sum of the best one-to-one matching of the rows and columns of a head-similarity matrix."""
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(S, maximize=True)
    return float(S[rows, cols].sum())


def head_similarities(published: np.ndarray, suspect: np.ndarray) -> np.ndarray:
    """(La, Lb): 100 × the matched cosine of every published layer's heads (La, Ha, 2n) with every
    suspect layer's (Lb, Hb, 2n): the summed cosine of the best matching divided by √(Ha·Hb), so
    a layer and its copy score 100 whatever the order of their heads."""
    return matched_similarities(centred(published), centred(suspect))


def matched_similarities(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """head_similarities of two models' heads already `centred` (identify centres the suspect once)."""
    cos, scale = _head_cosines(a, b)
    return np.array([[scale * matched(cos[i, j]) for j in range(cos.shape[1])] for i in range(cos.shape[0])])


BOUND_MARGIN = 1e-3  # float32 cosines: a matched sum, summed in float32, may pass its bound by rounding


def aligned_score(a: np.ndarray, b: np.ndarray) -> float:
    """compare.aligned_scores of matched_similarities(a, b), computing only the matchings that the
    best alignment of layers passes through (identify scores many entries this way).

    A matching pairs n = min(Ha, Hb) heads, each with a cosine no higher than its row's best or
    its column's, so a pair of layers' matched sum is at most the sum of the n highest row maxima,
    and of the n highest column maxima. Align on those bounds, replace the bounds of the pairs
    taken by their matchings, and repeat until the alignment takes matched pairs only: it is then
    the best alignment of the matched sums too, since every other pair's bound is at least its
    matched sum. Two 32-layer, 32-head models: about 30 of the 1,024 matchings when related, 160
    when not."""
    from fingerprint.compare import aligned_scores, alignment

    cos, scale = _head_cosines(a, b)
    n = min(cos.shape[2:])
    S = scale * np.minimum(_top_sum(cos.max(axis=3), n), _top_sum(cos.max(axis=2), n)) + BOUND_MARGIN
    exact = np.zeros(S.shape, dtype=bool)
    while todo := [(i, j) for i, j in alignment(S) if not exact[i, j]]:
        for i, j in todo:
            S[i, j], exact[i, j] = scale * matched(cos[i, j]), True
    return float(aligned_scores(S[None])[0])


def _top_sum(maxima: np.ndarray, n: int) -> np.ndarray:
    """The sum of the n highest values along the last axis, in float64."""
    return np.sort(maxima, axis=-1)[..., -n:].sum(axis=-1, dtype=np.float64)


def _head_cosines(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, float]:
    """(La, Lb, Ha, Hb) cosines of every head pair of two centred models, and the 100/√(Ha·Hb) that
    makes a layer's matched sum a score."""
    (la, ha, n), (lb, hb, _) = a.shape, b.shape
    flat_a, flat_b = (x.reshape(-1, n).astype(np.float32) for x in (a, b))  # cosines need no more than float32
    cos = (flat_a @ flat_b.T).reshape(la, ha, lb, hb).transpose(0, 2, 1, 3)  # a view: most pairs need only bounds
    return cos, 100.0 / math.sqrt(ha * hb)
