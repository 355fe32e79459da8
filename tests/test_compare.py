"""Comparing fingerprints layer by layer: the published model's layers are found in a suspect
whose depth changed (layers dropped, copied or inserted), in order, and nowhere else."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from fingerprint import compare as C


def _layers(seed: int, n: int, width: int = 96) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, width))


def test_identical_layers_score_100_and_align_one_to_one():
    A = _layers(0, 5)
    S = C.layer_similarities(A, A)
    assert C.aligned_scores(S[None])[0] == pytest.approx(100.0)
    assert C.alignment(S) == [(i, i) for i in range(5)]


def test_a_dropped_layer_costs_its_share_and_the_rest_still_align():
    A = _layers(1, 4)
    for gone in range(4):
        B = np.delete(A, gone, axis=0)
        S = C.layer_similarities(A, B)
        assert C.aligned_scores(S[None])[0] == pytest.approx(100 * 3 / np.sqrt(12), abs=5)  # the cosine of the aligned whole
        kept = [i for i in range(4) if i != gone]
        assert [(i, j) for i, j in C.alignment(S) if S[i, j] > 50] == list(zip(kept, range(3)))


def test_an_inserted_copy_costs_only_its_norm():
    A = _layers(2, 4)
    B = np.insert(A, 2, A[1], axis=0)  # block 1 repeated (depth up-scaling)
    assert C.aligned_scores(C.layer_similarities(A, B)[None])[0] == pytest.approx(100 * 4 / np.sqrt(20))


def test_alignment_keeps_the_order_of_layers():
    A = _layers(3, 4)
    reversed_ = C.layer_similarities(A, A[::-1])
    assert C.aligned_scores(reversed_[None])[0] < 30  # only one layer can pair with itself


def _best_matching_by_enumeration(s: np.ndarray) -> float:
    """max Σ s[i, j] over every monotone one-to-one matching, by trying them all."""
    la, lb = s.shape
    best = 0.0
    for k in range(1, min(la, lb) + 1):
        for rows in itertools.combinations(range(la), k):
            for cols in itertools.combinations(range(lb), k):
                best = max(best, sum(s[i, j] for i, j in zip(rows, cols)))
    return best


def test_the_programme_finds_the_best_monotone_matching():
    S = np.random.default_rng(5).uniform(-60, 100, size=(6, 4, 5))
    expected = [_best_matching_by_enumeration(s) / np.sqrt(4 * 5) for s in S]
    assert np.allclose(C.aligned_scores(S), expected)


def test_one_programme_scores_a_stack_like_one_by_one():
    S = np.random.default_rng(4).uniform(-30, 100, size=(7, 5, 6))
    one_by_one = [C.aligned_scores(s[None])[0] for s in S]
    assert np.allclose(C.aligned_scores(S), one_by_one)
    for s, score in zip(S, one_by_one):  # the traced alignment achieves the optimum
        assert sum(s[i, j] for i, j in C.alignment(s)) / np.sqrt(5 * 6) == pytest.approx(score)


def test_unrelated_random_layers_score_near_zero():
    scores = [C.aligned_scores(C.layer_similarities(_layers(10 + s, 4, 768), _layers(50 + s, 4, 768))[None])[0]
              for s in range(20)]
    assert max(scores) < 10


@pytest.fixture(scope="module")
def base(tiny_models):
    return tiny_models("llama", seed=0, steps=150, layers=3)


@pytest.mark.parametrize("derive, expected", [
    (lambda m, L: L.drop_layer(m, -1), 200 / np.sqrt(6)),   # Sheared-LLaMA-style depth pruning, before healing
    (lambda m, L: L.drop_layer(m, 1), 200 / np.sqrt(6)),
    (lambda m, L: L.insert_layer_copy(m, 1), 300 / np.sqrt(12)),  # depth up-scaling
    (lambda m, L: L.insert_layer_copy(m, 2, identity=True), 300 / np.sqrt(12)),
])
def test_structural_derivations_keep_the_published_layers(base, tmp_path, derive, expected):
    from dataclasses import replace

    from transformers import AutoModelForCausalLM

    from fingerprint import extract as E
    from fingerprint import lineage
    from zkfp.zoo.tiny import save

    published = E.extract(base)
    child = save(derive(AutoModelForCausalLM.from_pretrained(base), lineage), tmp_path / "child")
    suspect = E.extract(child, token_ids=published.token_ids)
    exact = C.compare(replace(published, heads=None), replace(suspect, heads=None))
    assert exact["basis"] == "invariants" and exact["similarity"] == pytest.approx(expected, abs=1e-3)
    assert all(s > 99.99 for _i, _j, s in exact["layers"]["aligned"])
    # On the heads each model's shared part, removed first, moves with its layers: a third of a
    # 3-layer model's heads dropped costs up to 4 points more than the layer's share.
    heads = C.compare(published, suspect)
    assert heads["basis"] == "heads" and expected - 5 < heads["similarity"] < expected + 0.5
    assert [p[:2] for p in heads["layers"]["aligned"]] == [p[:2] for p in exact["layers"]["aligned"]]


def test_fingerprint_files_of_different_depths_compare(base, tmp_path):
    """Depth is the model's, not the spec's: FP.json files of 3 and 2 layers compare (numpy only)."""
    from transformers import AutoModelForCausalLM

    from fingerprint import extract as E
    from fingerprint import fpjson, lineage
    from zkfp.zoo.tiny import save

    published = E.extract(base)
    child = save(lineage.drop_layer(AutoModelForCausalLM.from_pretrained(base), 0), tmp_path / "child")
    fpjson.save(published, tmp_path / "a.json", with_invariants=False)
    fpjson.save(E.extract(child), tmp_path / "b.json", with_invariants=False)
    a, b = fpjson.load(tmp_path / "a.json"), fpjson.load(tmp_path / "b.json")
    assert (a.layers, b.layers) == (3, 2) and len(b.v) == 2 * a.spec["m"]
    result = C.compare(a, b)
    assert result["basis"] == "v" and [ij[:2] for ij in result["layers"]["aligned"]] == [[1, 0], [2, 1]]


def test_fingerprint_files_whose_v_is_not_whole_layers_or_whose_mlp_kind_is_unknown_are_refused(tmp_path):
    import json

    from fingerprint import fpjson, spec
    from zkfp.errors import FingerprintError

    good = {"format": fpjson.FORMAT, "spec": spec.spec_dict(layers=3), "token_ids": spec.select_tokens(4096),
            "v": [0.5] * (3 * spec.M_DIM)}
    assert fpjson.from_json(good, "ok").layer_v().shape == (3, spec.M_DIM)
    short = dict(good, v=good["v"][:-1])
    with pytest.raises(FingerprintError, match=r"v must be 64 × 3 layers = 192 finite numbers"):
        fpjson.from_json(short, "short.json")
    with pytest.raises(FingerprintError, match="spec.mlp must be 'gated' or 'plain'"):
        fpjson.from_json(dict(good, spec=dict(good["spec"], mlp="moe")), "odd.json")
    (tmp_path / "t.json").write_text(json.dumps(good)[:-40])
    with pytest.raises(FingerprintError):
        fpjson.load(tmp_path / "t.json")


@pytest.mark.parametrize("bad", [True, float("nan"), float("inf"), "0.5", None, 10 ** 400, [0.5]],
                         ids=["bool", "nan", "inf", "string", "null", "huge int", "list"])
def test_fingerprint_files_whose_numbers_are_not_finite_numbers_are_refused(bad):
    from fingerprint import fpjson, spec
    from zkfp.errors import FingerprintError

    v = [0.5] * (3 * spec.M_DIM)
    good = {"format": fpjson.FORMAT, "spec": spec.spec_dict(layers=3), "token_ids": spec.select_tokens(4096), "v": v}
    read = fpjson.from_json(dict(good, v=[np.float64(0.5), 1, *v[2:]]), "ok").v
    assert read[:2] == [0.5, 1.0] and {type(x) for x in read} == {float}
    with pytest.raises(FingerprintError, match="v must be 64 × 3 layers = 192 finite numbers"):
        fpjson.from_json(dict(good, v=[*v[:-1], bad]), "bad.json")
    with pytest.raises(FingerprintError, match="invariants have the wrong length or non-finite values"):
        fpjson.from_json(dict(good, invariants=[bad] * spec.invariant_length(3)), "bad.json")


def test_thresholds_follow_the_published_models_mlp_kind():
    from fingerprint import spec

    gated, plain = spec.spec_dict(layers=4), spec.spec_dict(layers=4, mlp="plain")
    assert C.thresholds(gated, "invariants") == C.THRESHOLDS["gated"]["invariants"]
    assert C.thresholds(plain, "v") == C.THRESHOLDS["plain"]["v"]
    assert C.verdicts(np.array([60.0]), C.thresholds(gated, "invariants")) == ["same-lineage"]
    assert C.verdicts(np.array([60.0]), C.thresholds(plain, "invariants")) == ["inconclusive"]


def test_a_tied_head_on_either_side_takes_the_plain_thresholds_on_the_fingerprints():
    from fingerprint import spec
    from fingerprint.fpjson import Fingerprint

    gated = spec.spec_dict(layers=2)
    g = np.random.default_rng(0)

    def fp(tied):
        model = {} if tied is None else {"tied_embeddings": tied}
        return Fingerprint(spec=gated, token_ids=spec.select_tokens(4096), v=list(g.standard_normal(2 * spec.M_DIM)),
                           model=model)

    untied, tied, unknown = fp(False), fp(True), fp(None)
    for a, b in ((untied, untied), (untied, unknown), (unknown, unknown)):
        out = C.compare(a, b)
        assert out["thresholds"]["related"] == C.THRESHOLDS["gated"]["v"]["related"] and not out["tied"]
    for a, b in ((tied, untied), (untied, tied), (tied, unknown)):
        out = C.compare(a, b)
        assert out["thresholds"]["related"] == C.THRESHOLDS["gated-tied"]["v"]["related"] and out["tied"]
    # A score that is same-lineage between untied Llamas is not between tied ones (their twins reach 78).
    assert C.verdicts(70.0, C.thresholds(gated, "invariants")) == ["same-lineage"]
    assert C.verdicts(70.0, C.thresholds(gated, "invariants", tied=True)) == ["inconclusive"]
    plain = spec.spec_dict(layers=2, mlp="plain")  # GPT-2 ties its head: its thresholds already are the tied ones
    assert C.thresholds(plain, "v", tied=True) == C.thresholds(plain, "v") == C.THRESHOLDS["plain"]["v"]


def test_the_architecture_says_whether_the_head_is_tied_as_transformers_would():
    from zkfp.architectures import detect

    llama = {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
             "intermediate_size": 128, "vocab_size": 512, "hidden_act": "silu"}
    gpt2 = {"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 4, "vocab_size": 512}
    assert not detect(llama).tied_embeddings and detect(dict(llama, tie_word_embeddings=True)).tied_embeddings
    assert detect(gpt2).tied_embeddings and not detect(dict(gpt2, tie_word_embeddings=False)).tied_embeddings
