"""Per-head vectors (fingerprint.heads): the summands of the attention terms, compared as sets of
heads once what every head of a model shares is removed; the basis `zkfp compare` prefers when
both sides carry them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fingerprint import compare as C
from fingerprint import extract as E
from fingerprint import fpjson, spec
from fingerprint import invariants as inv
from fingerprint.heads import aligned_score, centred, head_similarities, matched_similarities
from zkfp.errors import FingerprintError, RegistryError

N = spec.head_length()


def _heads(seed: int, layers: int = 3, heads: int = 4) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((layers, heads, N))


def test_a_layer_scores_100_against_itself_whatever_the_order_of_its_heads():
    A = _heads(0)
    shuffled = A[:, [2, 0, 3, 1]]
    S = head_similarities(A, shuffled)
    assert np.diag(S) == pytest.approx([100.0] * 3)
    assert C.aligned_scores(S[None])[0] == pytest.approx(100.0)


def test_what_every_head_of_a_model_shares_is_not_evidence_of_lineage():
    """Two unrelated models whose heads all carry one common pattern (the tied head's bigram
    statistics) look alike head by head, and not once the model-wide mean is removed."""
    common = np.random.default_rng(9).standard_normal(N)
    A, B = _heads(1) + 3 * common, _heads(2) + 3 * common
    raw = np.einsum("hn,gn->hg", A[0] / np.linalg.norm(A[0], axis=-1, keepdims=True),
                    B[0] / np.linalg.norm(B[0], axis=-1, keepdims=True))
    assert raw.mean() > 0.8
    assert abs(C.aligned_scores(head_similarities(A, B)[None])[0]) < 30
    assert np.linalg.norm(centred(A), axis=-1) == pytest.approx(np.ones((3, 4)))


def test_layers_with_different_head_counts_compare():
    A = _heads(3, heads=4)
    S = head_similarities(A, A[:, :2])  # two of the four heads kept: they match themselves, √(4·2) normalises
    assert np.diag(S) == pytest.approx([100 * 2 / np.sqrt(8)] * 3, abs=5)  # (each side's own mean moves them a little)
    assert C.alignment(S) == [(0, 0), (1, 1), (2, 2)]


@pytest.mark.parametrize("suspect", ["unrelated", "noisy copy, heads shuffled", "layers reversed", "last layer dropped",
                                     "half the heads", "unrelated, one head", "unrelated, more heads"])
def test_identify_aligns_on_bounds_and_gets_the_score_of_every_matching(suspect):
    """aligned_score computes only the matchings the best alignment passes through; its score is
    the alignment of every pair's matching, for related and unrelated models alike (few heads and
    noisy suspects, so that bounds and matchings differ and the alignment moves between rounds)."""
    for seed in range(10):
        g = np.random.default_rng(seed)
        A = g.standard_normal((6, 3, N))
        B = {"unrelated": lambda: g.standard_normal(A.shape),
             "noisy copy, heads shuffled": lambda: A[:, g.permutation(3)] + 3 * g.standard_normal(A.shape),
             "layers reversed": lambda: A[::-1] + 2 * g.standard_normal(A.shape),
             "last layer dropped": lambda: A[:-1] + 2 * g.standard_normal((5, 3, N)),
             "half the heads": lambda: A[:, :2] + 2 * g.standard_normal((6, 2, N)),
             "unrelated, one head": lambda: g.standard_normal((6, 1, N)),  # a matching leaves rows unmatched
             "unrelated, more heads": lambda: g.standard_normal((6, 5, N))}[suspect]()
        a, b = centred(A), centred(B)
        assert aligned_score(a, b) == pytest.approx(C.aligned_scores(matched_similarities(a, b)[None])[0], abs=1e-9)


def test_the_heads_are_the_summands_of_the_attention_terms(tiny_models):
    """extract's per-head terms add up, head by head, to M_a and M_b (GQA included)."""
    from fingerprint.sources import open_source

    path = tiny_models("llama", steps=5)
    src = open_source(path)
    terms, per_head = E.terms_from_source(src, spec.select_tokens(src.vocab()))
    assert per_head.shape[:3] == (src.arch.dims.layers, src.arch.dims.heads, 2)
    torch.testing.assert_close(per_head.sum(dim=1), terms[:, :2], rtol=1e-4, atol=1e-4 * float(terms.abs().max()))


@pytest.mark.parametrize("family, transforms", [("llama", ["T1", "T2", "T3", "T4", "T5", "T6"]),
                                                ("gpt2", ["T1", "T2", "T3", "T4", "T5"])])
def test_the_heads_basis_is_invariant_to_every_disguise(request, disguised, tmp_path, family, transforms):
    model = request.getfixturevalue(family)
    a = E.extract(model)
    result = C.compare(a, E.extract(disguised(model, transforms, tmp_path)))
    assert result["basis"] == "heads" and result["similarity"] > 99.99


def test_fp_json_keeps_the_heads_and_refuses_a_broken_list(llama, tmp_path):
    fp = E.extract(llama)
    fpjson.save(fp, tmp_path / "fp.json")
    back = fpjson.load(tmp_path / "fp.json")
    assert back.layer_heads().shape == (fp.layers, 4, N) and back.heads == fp.heads
    fpjson.save(fp, tmp_path / "bare.json", with_invariants=False)
    assert fpjson.load(tmp_path / "bare.json").heads is None
    data = json.loads((tmp_path / "fp.json").read_text())
    for bad in (data["heads"][:-1], data["heads"][:-1] + [float("nan")], [], "heads"):
        (tmp_path / "bad.json").write_text(json.dumps(dict(data, heads=bad)))
        with pytest.raises(FingerprintError, match="heads must be a whole number of heads"):
            fpjson.load(tmp_path / "bad.json")


def test_compare_prefers_the_heads_and_falls_back_without_them_or_without_scipy(llama, monkeypatch):
    fp = E.extract(llama)
    assert C.compare(fp, fp)["basis"] == "heads"
    bare = fpjson.from_json(fp.to_json(with_invariants=False), "bare")
    with_invariants = fpjson.from_json(dict(fp.to_json(), heads=None), "no heads")
    assert C.compare(fp, with_invariants)["basis"] == "invariants"
    assert C.compare(bare, fp)["basis"] == "v"
    monkeypatch.setattr(C, "can_match_heads", lambda: False)  # a verifier's numpy-only install
    assert C.compare(fp, fp)["basis"] == "invariants"


def test_head_vectors_are_each_terms_zscored_off_diagonal():
    t = torch.randn(2, 3, 2, 16, 16, dtype=torch.float64)
    h = inv.head_vectors(t)
    assert h.shape == (2, 3, N)
    first = t[1, 2, 0].reshape(-1)[torch.tensor(spec.off_diagonal())]
    torch.testing.assert_close(h[1, 2, :N // 2], inv.zscore(first))


def _fingerprint(heads: np.ndarray, seed: int):
    from fingerprint.fpjson import Fingerprint

    g = np.random.default_rng(seed)
    layers = heads.shape[0]
    return Fingerprint(spec=spec.spec_dict(layers), token_ids=spec.select_tokens(4096),
                       v=[float(x) for x in g.standard_normal(layers * spec.M_DIM)],
                       invariants=[float(x) for x in g.standard_normal(spec.invariant_length(layers))],
                       heads=[float(x) for x in heads.reshape(-1)], model={"family": "synthetic"})


def test_the_registry_keeps_the_heads_and_identify_scores_them_as_compare_does(tmp_path):
    from fingerprint.identify import identify
    from fingerprint.registry import Registry

    base = _heads(10)
    child = base[:, ::-1] + 0.3 * np.random.default_rng(11).standard_normal(base.shape)  # heads reordered, changed
    published = {"base": _fingerprint(base, 1), "stranger": _fingerprint(_heads(12), 2)}
    suspect = _fingerprint(child, 3)
    with Registry(tmp_path / "r.sqlite") as reg:
        for name, fp in published.items():
            reg.add(fp, name, source="test")
        (group,) = reg.groups()
        assert np.allclose(group.heads[0], base, atol=1e-6)
        fpjson.save(suspect, tmp_path / "suspect.json")
        matches = {m.name: m for m in identify(tmp_path / "suspect.json", reg).matches}
    for name, fp in published.items():
        expected = C.compare(fp, suspect)
        assert (matches[name].basis, matches[name].verdict) == ("heads", expected["verdict"])
        assert matches[name].similarity == pytest.approx(expected["similarity"], abs=1e-3)
    assert (matches["base"].verdict, matches["stranger"].verdict) == ("same-lineage", "unrelated")


def test_a_group_reads_each_entrys_heads_when_asked_and_an_entry_removed_since_has_none(tmp_path):
    """A 7B-shaped entry's heads are 2 MiB: groups() says which entries carry them and reads none.
    An entry removed since reads as None, also when the same fingerprint is added again and takes
    its row (SQLite reuses the last row)."""
    from fingerprint.registry import Registry

    bare = fpjson.from_json(dict(_fingerprint(_heads(14), 2).to_json(), heads=None), "bare")
    with Registry(tmp_path / "r.sqlite") as reg:
        reg.add(bare, "without", source="test")
        reg.add(_fingerprint(_heads(13), 1), "with", source="test")
        (group,) = reg.groups()
        assert list(group.heads.carries) == [False, True] and group.heads[0] is None
        assert np.allclose(group.heads[1], _heads(13), atol=1e-6)
        reg.remove("with")
        reg.add(_fingerprint(_heads(13), 1), "again", source="test")  # same digest, same row
        assert list(group.heads) == [None, None]
        (group,) = reg.groups()
    with pytest.raises(RegistryError, match="is closed: read a group's heads while it is open"):
        group.heads[1]


def test_identify_scores_only_the_best_entries_on_their_heads(tmp_path, monkeypatch):
    """Matching heads costs a linear assignment per pair of layers, so identify ranks a registry on
    the invariants first and scores its best HEADS_RESCORED entries on their heads."""
    from fingerprint import identify as I
    from fingerprint.registry import Registry

    base = _fingerprint(_heads(20), 1)
    near = fpjson.from_json(dict(base.to_json(), v=list(np.asarray(base.v) + 0.1),
                                 invariants=list(np.asarray(base.invariants) + 0.1)), "near")  # best on invariants
    far = _fingerprint(_heads(21), 2)
    monkeypatch.setattr(I, "HEADS_RESCORED", 1)
    with Registry(tmp_path / "r.sqlite") as reg:
        reg.add(near, "near", source="test")
        reg.add(far, "far", source="test")
        fpjson.save(base, tmp_path / "suspect.json")
        matches = {m.name: m for m in I.identify(tmp_path / "suspect.json", reg).matches}
    assert (matches["near"].basis, matches["far"].basis) == ("heads", "invariants")


def test_a_model_of_one_head_keeps_it():
    """With a single head there is no shared part to remove: a copy still scores 100."""
    A = _heads(30, layers=1, heads=1)
    assert head_similarities(A, A)[0, 0] == pytest.approx(100.0)
