"""Compare two fingerprints: layers aligned, HuRef's 100 × cosine per layer, a calibrated verdict. numpy only.

A fingerprint holds one vector per layer (fingerprint.encoder). Structural derivations keep the
order of the layers they keep: depth pruning drops some (Sheared-LLaMA), depth up-scaling repeats
some, width pruning, merges and GQA→MHA keep them all. So the published model's layers are
matched to the suspect's by the monotone one-to-one alignment that maximises the summed
similarity (a Needleman-Wunsch alignment with free gaps), and the score is that sum divided by
√(L_a·L_b): 100 × the cosine of the two whole fingerprints once their layers are aligned (each
layer's vector has unit norm; a layer without a partner adds to its side's norm, not to the dot
product). Two copies of one model score 100; dropping one of L layers leaves at most
100·√((L−1)/L), repeating one 100·√(L/(L+1)).

Per-layer similarity is taken on the per-head vectors when both files carry them (the heads of
two layers matched one to one: fingerprint.heads; needs scipy), else on the invariants when both
carry them, else on v (what a proof bundle holds).
Thresholds come from toy populations (`benchmarks/fingerprint_zoo.py` and
`benchmarks/null_populations.py`, see the README). A score at or above `related` says
same-lineage, at or below `unrelated` says unrelated, in between is inconclusive.
`false_positive_rate` is the rate implied at the `related` threshold by a Gaussian fitted to the
populations' unrelated pairs (one-sided).
"""

from __future__ import annotations

import math

import numpy as np

from fingerprint.fpjson import Fingerprint
from zkfp.errors import FingerprintError

# Calibrated on toy populations, per MLP kind and basis: the zoo's pairs (benchmarks/fingerprint_zoo.py:
# 4-layer models on a trained 4,096-token BPE, with structural derivations) pooled with seed twins of
# 2 and 8 layers, of hidden 128, and on the demo's 512-token toy vocabulary
# (benchmarks/null_populations.py), and with a population of hidden 256 for each family
# (benchmarks/scale_population.py), by the rule in `fingerprint_zoo.rule`. Seed twins of plain-MLP
# models (GPT-2) look far more alike on the fingerprints than gated ones (Llama), and their null
# moves with the population (twins of 2 layers or on the toy vocabulary reach 62-66), hence the
# high plain `related`; at hidden 256 the twins part but a heavily continued model scores as low as
# 30-32 against its relatives, hence the low plain `unrelated`. Under zkfp-fp/3 (no diagonals) the
# gated nulls top out at 27.8 / 31.0, so the gated `related` is 35 / 40 on the fingerprint bases (the
# rule keeps it 5 above every unrelated pair); the weights' bases keep a floor of 50 (shared
# initialisations, see the rule). Gated rows: the pool rebuilt on 2026-12-02 (h256 included); plain
# rows: GPT-2's populations and h256 retrained on 2026-12-02, the rule applied to that pool.
# "heads" (fingerprint.heads: heads matched, each model's shared mean removed) is the rule's output on the
# same pools scored again with it: its nulls are low in every family, tied heads included.
# null_mean/null_sd describe the
# pooled unrelated pairs (the Gaussian null of the implied false-positive rate; the pool mixes
# populations, so it is a rough guide). "weights" is fingerprint.weights (both models at hand,
# bases aligned, forms whitened); "gauge" is its one-sided test of W_q and W_k, of which only
# `related` is used (a disguise lowers the gauge, so its `unrelated`, the rule's output, decides nothing).
THRESHOLDS = {
    "gated": {"heads": {"related": 20.0, "unrelated": 15.0, "null_mean": 7.4, "null_sd": 1.9},
              "invariants": {"related": 35.0, "unrelated": 25.0, "null_mean": 8.2, "null_sd": 4.2},
              "v": {"related": 40.0, "unrelated": 30.0, "null_mean": 13.6, "null_sd": 5.4},
              "weights": {"related": 50.0, "unrelated": 5.0, "null_mean": 1.5, "null_sd": 0.8},
              "gauge": {"related": 50.0, "unrelated": 10.0, "null_mean": 2.7, "null_sd": 2.1}},
    "plain": {"heads": {"related": 45.0, "unrelated": 20.0, "null_mean": 19.0, "null_sd": 4.8},
              "invariants": {"related": 95.0, "unrelated": 25.0, "null_mean": 37.8, "null_sd": 13.6},
              "v": {"related": 90.0, "unrelated": 25.0, "null_mean": 35.2, "null_sd": 12.8},
              "weights": {"related": 50.0, "unrelated": 20.0, "null_mean": 6.0, "null_sd": 3.1},
              "gauge": {"related": 50.0, "unrelated": 10.0, "null_mean": 12.7, "null_sd": 4.0}},
    # Gated MLP with the output head tied to the embedding (Llama-3.2-1B, Qwen2-0.5B, SmolLM2): the rule on
    # a pool of tied Llamas (zoo_build.py --families llama-tied, null_populations.py --families llama-tied),
    # whose seed twins look alike on the fingerprints as GPT-2's do (up to 78.2 / 80.8 on the toy
    # vocabulary) and share more of the gauge (up to 51.0) than untied ones. Since 2026-12-02 the pool holds a
    # tied population at hidden 256 too (scale_population.py --family llama-tied): its heavy continued
    # pretraining and drop-last relatives (invariants 52–68) moved `unrelated` down to 50 on invariants and v.
    "gated-tied": {"heads": {"related": 45.0, "unrelated": 30.0, "null_mean": 16.1, "null_sd": 4.0},
                   "invariants": {"related": 85.0, "unrelated": 50.0, "null_mean": 40.4, "null_sd": 10.4},
                   "v": {"related": 90.0, "unrelated": 50.0, "null_mean": 40.5, "null_sd": 10.5},
                   "weights": {"related": 50.0, "unrelated": 10.0, "null_mean": 3.5, "null_sd": 1.6},
                   "gauge": {"related": 65.0, "unrelated": 20.0, "null_mean": 27.8, "null_sd": 8.4}},
}
SPEC_KEYS = ("version", "k", "m", "encoder")  # what two comparable fingerprints share (depth, MLP may differ)


def implied_fpr(threshold: float, mean: float, sd: float) -> float:
    """P(N(mean, sd²) ≥ threshold): the false-positive rate of the Gaussian null at a threshold."""
    return 0.5 * math.erfc((threshold - mean) / (sd * math.sqrt(2)))


def similarities(rows: np.ndarray, x: np.ndarray) -> np.ndarray:
    """100 × cosine of each row of `rows` with `x` (HuRef's ICS scale), in float64."""
    rows, x = np.atleast_2d(np.asarray(rows)), np.asarray(x, dtype=np.float64).reshape(-1)
    dots = rows @ x.astype(rows.dtype)
    norms = np.linalg.norm(rows, axis=1) * np.linalg.norm(x)
    return 100.0 * dots.astype(np.float64) / np.maximum(norms.astype(np.float64), 1e-300)


def layer_similarities(published: np.ndarray, suspect: np.ndarray) -> np.ndarray:
    """(..., La, Lb): 100 × cosine of every published layer (…, La, n) with every suspect layer (Lb, n),
    in the published vectors' precision (a registry's float32 stays float32: ranking thousands)."""
    a = np.asarray(published)
    a = a if a.dtype in (np.float32, np.float64) else a.astype(np.float64)
    tiny = np.finfo(a.dtype).tiny
    b = np.asarray(suspect, dtype=np.float64)
    b = (b * (100.0 / np.maximum(np.linalg.norm(b, axis=-1), tiny))[:, None]).astype(a.dtype)  # the few suspect rows
    S = a @ b.T
    S /= np.maximum(np.sqrt(np.einsum("...i,...i->...", a, a)), tiny)[..., None]  # in place: S can be 10⁷ numbers
    return S


def _programme(S: np.ndarray, every_row: bool = False) -> list[np.ndarray]:
    """The alignment programme on a (N, La, Lb) stack (float64 sums of S in any float precision):
    D_i[:, j] is the best sum of similarities over monotone one-to-one matchings of published
    layers < i with suspect layers < j (a gap costs nothing, so a negative pair is never matched).
    Returns [D_La], or every row D_0 … D_La (`every_row`, for the backtrack).

    D_i[j+1] = max(D_i[j], D_{i-1}[j+1], D_{i-1}[j] + S[i, j]): the last two terms do not depend
    on D_i, and the first makes D_i their running maximum, so a row is two vector operations and
    a prefix maximum over the whole stack, in two buffers (max is exact: the same values as the
    cell-by-cell recurrence)."""
    n, la, lb = S.shape
    prev, row, step = np.zeros((n, lb + 1)), np.zeros((n, lb + 1)), np.empty((n, lb))
    rows = [prev.copy()] if every_row else []
    for i in range(la):
        np.add(prev[:, :-1], S[:, i, :], out=step)
        np.maximum(prev[:, 1:], step, out=row[:, 1:])  # row[:, 0] stays 0: nothing matched yet
        np.maximum.accumulate(row, axis=1, out=row)
        if every_row:
            rows.append(row.copy())
        prev, row = row, prev
    return rows if every_row else [prev]


def aligned_scores(S: np.ndarray) -> np.ndarray:
    """Score of the best alignment for each (La, Lb) matrix of a (N, La, Lb) stack: max Σ S[i, j]
    over matched pairs (i < i' ⇒ j < j'), divided by √(La·Lb). One programme for the whole stack,
    so a registry of thousands ranks in one pass."""
    S = np.asarray(S)
    last, = _programme(S)
    return last[:, -1] / math.sqrt(S.shape[1] * S.shape[2])


def alignment(S: np.ndarray) -> list[tuple[int, int]]:
    """The (published layer, suspect layer) pairs of the best alignment of one (La, Lb) matrix."""
    S = np.asarray(S, dtype=np.float64)
    D = np.stack([row[0] for row in _programme(S[None], every_row=True)])
    pairs, i, j = [], *S.shape
    while i and j:
        if D[i, j] == D[i - 1, j]:
            i -= 1
        elif D[i, j] == D[i, j - 1]:
            j -= 1
        else:
            pairs.append((i - 1, j - 1))
            i, j = i - 1, j - 1
    return pairs[::-1]


def can_match_heads() -> bool:
    """Whether the per-head basis can be used: its matching is scipy's (an owner's install has it;
    a verifier's numpy-only install compares on the invariants or v instead)."""
    import importlib.util

    return importlib.util.find_spec("scipy") is not None


def thresholds(spec: dict, basis: str, tied: bool = False) -> dict:
    """The calibrated thresholds for a published fingerprint's spec (its MLP kind), whether a side
    ties its output head to the embedding (`tied`), and a basis. The gated ones were calibrated on
    Llamas with a head of their own; seed twins with a tied head look alike on the fingerprints
    whatever their MLP (Llama twins: 38-59 tied, 8-10 untied; README), so tied gated models have
    thresholds of their own ("gated-tied", calibrated on tied Llamas)."""
    kind = spec.get("mlp", "gated")
    return THRESHOLDS["gated-tied" if kind == "gated" and tied else kind][basis]


def tied(*models: dict) -> bool:
    """Whether a side of a comparison ties its embeddings (`model.tied_embeddings` of a fingerprint
    file or bundle; unknown counts as untied). Either side decides: a derivative keeps its base's
    head as it was, and an unrelated tied model must not be judged by the untied null."""
    return any(bool(m.get("tied_embeddings")) for m in models)


def verdicts(sim: np.ndarray, t: dict) -> list[str]:
    """same-lineage / inconclusive / unrelated for similarities under thresholds `t`."""
    return ["same-lineage" if s >= t["related"] else "unrelated" if s <= t["unrelated"] else "inconclusive"
            for s in np.atleast_1d(sim)]


def null_z(sim: np.ndarray, t: dict) -> np.ndarray:
    """Standard deviations above the unrelated pairs' mean: one scale for every basis and MLP kind."""
    return (np.asarray(sim, dtype=np.float64) - t["null_mean"]) / t["null_sd"]


def spec_mismatch(a: dict, b: dict) -> str | None:
    """Why fingerprints under specs `a` and `b` cannot be compared, or None."""
    if a.get("version") != b.get("version"):
        return (f"fingerprints use different spec versions ({a.get('version')} vs {b.get('version')}); "
                "recompute both with the same zkfp")
    for key in SPEC_KEYS[1:]:
        if a.get(key) != b.get(key):
            return f"fingerprints differ in spec.{key} ({a.get(key)} vs {b.get(key)})"
    return None


def check_compatible(a: Fingerprint, b: Fingerprint) -> None:
    reason = spec_mismatch(a.spec, b.spec)
    if reason:
        raise FingerprintError(reason)
    same_tokens = a.tokens is not None and a.tokens == b.tokens  # the same tokens, numbered alike or not
    if list(a.token_ids) != list(b.token_ids) and not same_tokens:
        raise FingerprintError("fingerprints were computed on different token lists; compare a model folder "
                               "(zkfp compare PUBLISHED MODEL_DIR fingerprints it on PUBLISHED's tokens)")


def scored(S: np.ndarray, basis: str, t: dict) -> dict:
    """The aligned score of a (published layers, suspect layers) similarity matrix, with its verdict
    under thresholds `t`, the alignment and the implied false-positive rate: the result every
    comparison (fingerprints or weights) reports."""
    sim = float(aligned_scores(S[None])[0])
    return {"similarity": round(sim, 4), "verdict": verdicts(sim, t)[0], "basis": basis,
            "layers": {"published": S.shape[0], "suspect": S.shape[1],
                       "aligned": [[i, j, round(float(S[i, j]), 2)] for i, j in alignment(S)]},
            "thresholds": {"related": t["related"], "unrelated": t["unrelated"]},
            "false_positive_rate": implied_fpr(t["related"], t["null_mean"], t["null_sd"])}


def basis_of(published: Fingerprint, suspect: Fingerprint) -> str:
    """The basis two fingerprints are compared on: the heads where both carry them (and scipy is
    there to match them), else the invariants where both carry them, else v."""
    if published.heads is not None and suspect.heads is not None and can_match_heads():
        return "heads"
    return "invariants" if published.invariants is not None and suspect.invariants is not None else "v"


def basis_similarities(published: Fingerprint, suspect: Fingerprint, basis: str) -> np.ndarray:
    """(published layers, suspect layers) similarities on `basis` ("heads", "invariants" or "v")."""
    if basis == "heads":
        from fingerprint.heads import head_similarities

        return head_similarities(published.layer_heads(), suspect.layer_heads())
    layers = Fingerprint.layer_invariants if basis == "invariants" else Fingerprint.layer_v
    return layer_similarities(layers(published), layers(suspect))


def compare(published: Fingerprint, suspect: Fingerprint) -> dict:
    """How much of `published` is found in `suspect`: the aligned score, its verdict, the alignment."""
    check_compatible(published, suspect)
    S_v = basis_similarities(published, suspect, "v")
    basis = basis_of(published, suspect)
    S = S_v if basis == "v" else basis_similarities(published, suspect, basis)
    tied_ = tied(published.model, suspect.model)
    return {**scored(S, basis, thresholds(published.spec, basis, tied_)), "tied": tied_,
            "v_similarity": round(float(aligned_scores(S_v[None])[0]), 4),
            "renumbered": list(published.token_ids) != list(suspect.token_ids),  # same tokens at other ids
            # whether both read the same token strings (None: a side does not know its strings)
            "same_tokens": None if published.tokens is None or suspect.tokens is None
            else published.tokens == suspect.tokens,
            "spec": published.spec.get("version"), "k": published.spec.get("k")}
