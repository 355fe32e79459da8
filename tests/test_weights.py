"""fingerprint.weights: two models compared by their weights once the bases are aligned."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch

from fingerprint import disguise, lineage
from fingerprint import weights as W
from zkfp.errors import FingerprintError


def test_procrustes_recovers_a_rotation():
    g = torch.Generator().manual_seed(0)
    rows = torch.randn(200, 16, generator=g, dtype=torch.float64)
    Q, _ = torch.linalg.qr(torch.randn(16, 16, generator=g, dtype=torch.float64))
    assert torch.allclose(W.procrustes(rows @ Q, rows), Q.T, atol=1e-10)


def test_whitening_gives_the_rows_unit_second_moment_on_their_span():
    g = torch.Generator().manual_seed(0)
    rows = torch.randn(500, 8, generator=g, dtype=torch.float64) * torch.logspace(0, 3, 8, dtype=torch.float64)
    rows = rows - rows.mean(dim=1, keepdim=True)  # centred, as LayerNorm rows: the all-ones direction is empty
    T = W.whitening(rows)
    white = rows @ T
    ones = torch.full((8,), 8 ** -0.5, dtype=torch.float64)
    assert torch.allclose(white.T @ white / 500, torch.eye(8, dtype=torch.float64) - torch.outer(ones, ones),
                          atol=1e-8)
    assert torch.allclose(T @ ones, torch.zeros(8, dtype=torch.float64), atol=1e-8)  # not amplified: dropped


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_a_disguised_copy_is_the_same_model_on_the_weights(family, llama, gpt2, disguised, tmp_path):
    src = {"llama": llama, "gpt2": gpt2}[family]
    ts = disguise.LLAMA_TRANSFORMS if family == "llama" else disguise.GPT2_TRANSFORMS
    out = W.compare_weights(src, disguised(src, list(ts), tmp_path))
    assert out["similarity"] > 99.9 and out["verdict"] == "same-lineage"
    assert out["alignment_residual"] < 1e-4
    assert out["layers"]["aligned"] == [[i, i, pytest.approx(100.0, abs=0.1)] for i in range(3)]


def test_a_seed_twin_is_unrelated_and_a_dropped_layer_is_skipped(llama, tiny_models, derived, tmp_path):
    twin = tiny_models("llama", seed=1, steps=150, layers=3)
    out = W.compare_weights(llama, twin)
    assert out["verdict"] == "unrelated", out
    dropped = derived(llama, lambda m: lineage.drop_layer(m, 1), tmp_path / "drop")
    out = W.compare_weights(llama, dropped)
    assert out["verdict"] == "same-lineage"
    assert [p[:2] for p in out["layers"]["aligned"]] == [[0, 0], [2, 1]]
    extended = derived(llama, lambda m: lineage.extend_vocab(m, 40, seed=1), tmp_path / "vext")
    assert W.compare_weights(llama, extended)["similarity"] > 99.9  # aligned on the ids both have


def test_the_gauge_is_kept_by_a_derivative_not_shared_by_a_twin_and_redrawn_by_a_disguise(
        llama, tiny_models, derived, disguised, tmp_path):
    pruned = derived(llama, lineage.magnitude_prune, tmp_path / "pruned")
    twin = tiny_models("llama", seed=1, steps=150, layers=3)
    copy = disguised(llama, list(disguise.LLAMA_TRANSFORMS), tmp_path)
    related, unrelated, hidden = (W.compare_weights(llama, m) for m in (pruned, twin, copy))
    assert related["gauge"] >= related["gauge_related"] and related["verdict"] == "same-lineage"
    assert unrelated["gauge"] < 20 and unrelated["verdict"] == "unrelated"
    # the disguise re-draws the per-head factorisation and rotates the basis: its gauge looks unrelated,
    # which is why a low gauge decides nothing and the forms give the verdict
    assert hidden["gauge"] < 20 and hidden["forms_verdict"] == hidden["verdict"] == "same-lineage"


def test_the_weights_verdict_takes_the_gauge_as_one_sided_evidence():
    assert W.verdict(27.3, 63.2, "plain") == "same-lineage"  # a heavy continuation the forms leave open
    assert W.verdict(27.3, 12.0, "plain") == "inconclusive"
    assert W.verdict(1.0, 12.0, "gated") == "unrelated"
    assert W.verdict(99.0, 3.0, "gated") == "same-lineage"  # a disguised copy: the forms decide
    # Tied heads: seed twins' gauge reaches 51 and their forms 8 (README), so both bars move up.
    assert W.verdict(8.0, 52.0, "gated") == "same-lineage" and W.verdict(8.0, 52.0, "gated", tied=True) == "unrelated"


def test_a_sketched_comparison_approximates_the_exact_one(llama, tiny_models, disguised, tmp_path, monkeypatch):
    twin = tiny_models("llama", seed=1, steps=150, layers=3)
    exact = W.compare_weights(llama, twin)["similarity"]
    monkeypatch.setattr(W, "SKETCH", 32)  # hidden 64 > r: the d×r sketch path
    assert W.sketch(64).shape == (64, 32)
    copy = disguised(llama, list(disguise.LLAMA_TRANSFORMS), tmp_path)
    assert W.compare_weights(llama, copy)["similarity"] > 99.9
    assert abs(W.compare_weights(llama, twin)["similarity"] - exact) < 5


def test_a_taylor_release_compares_as_its_source(llama, tmp_path):
    taylor = pytest.importorskip("taylor")
    release = taylor.protect(llama, tmp_path / "release")
    assert W.compare_weights(release, llama)["similarity"] > 99.9


def test_models_that_cannot_be_aligned_are_refused(llama, tiny_models, tmp_path):
    narrow = tiny_models("llama", seed=0, steps=20, layers=3, hidden=32, heads=4)
    with pytest.raises(FingerprintError, match="hidden sizes differ"):
        W.compare_weights(llama, narrow)
    (tmp_path / "FP.json").write_text("{}")
    with pytest.raises(FingerprintError, match="must be a model or release folder too"):
        W.compare_weights(llama, tmp_path / "FP.json")


def test_cli_compares_two_model_folders_by_their_weights(llama, gpt2, tmp_path):
    run = lambda *a: subprocess.run([sys.executable, "-m", "zkfp.cli", *a], capture_output=True, text=True)  # noqa: E731
    r = run("compare", str(llama), str(llama), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["basis"] == "weights" and out["verdict"] == "same-lineage"
    r = run("compare", str(llama), str(gpt2))
    assert r.returncode == 0 and "cosine of weights" in r.stdout and "unrelated" in r.stdout
    assert "gauge " in r.stdout and "a low one says nothing" in r.stdout
    assert run("fingerprint", str(llama), "--out", str(tmp_path / "a.json")).returncode == 0
    r = run("compare", str(llama), str(tmp_path / "a.json"))
    assert r.returncode != 0 and "must be a model or release folder too" in r.stderr


def test_identify_scores_an_entry_whose_release_is_at_hand_on_the_weights(llama, tiny_models, derived, tmp_path,
                                                                         monkeypatch):
    taylor = pytest.importorskip("taylor")
    from fingerprint import compare as C
    from fingerprint.extract import extract
    from fingerprint.fpjson import save
    from fingerprint.identify import identify
    from fingerprint.registry import Registry, add_file
    from zkfp.errors import RegistryError

    release = taylor.protect(llama, tmp_path / "release")
    suspect = derived(llama, lambda m: lineage.drop_layer(m, 1), tmp_path / "drop")
    registry = tmp_path / "registry.sqlite"
    with Registry(registry) as reg:
        for name, model in (("base", llama), ("twin", tiny_models("llama", seed=1, steps=150, layers=3))):
            save(extract(model), tmp_path / f"{name}.json")
            add_file(reg, tmp_path / f"{name}.json", name)
        ident = identify(suspect, reg, releases={"base": release})
        best, other = ident.matches
        assert (best.name, best.basis, best.verdict) == ("base", "weights", "same-lineage")
        assert best.similarity == pytest.approx(W.compare_weights(release, suspect)["similarity"])
        assert (other.name, other.basis) == ("twin", "heads")
        with monkeypatch.context() as m:  # forms that cannot reach `related`: the gauge decides, and says so
            m.setitem(C.THRESHOLDS["gated"], "weights", {**C.THRESHOLDS["gated"]["weights"], "related": 101.0})
            best = identify(suspect, reg, releases={"base": release}).matches[0]
            assert best.verdict == "same-lineage" and "by the gauge of W_q, W_k" in best.note
        with pytest.raises(FingerprintError, match="not the release registered as 'twin'"):
            identify(suspect, reg, releases={"twin": release})
        with pytest.raises(RegistryError, match="no entry named 'nobody'"):
            identify(suspect, reg, releases={"nobody": release})
        with pytest.raises(FingerprintError, match="needs a model or release folder as the suspect"):
            identify(tmp_path / "base.json", reg, releases={"base": release})
    run = lambda *a: subprocess.run([sys.executable, "-m", "zkfp.cli", *map(str, a)], capture_output=True, text=True)  # noqa: E731
    r = run("identify", suspect, "--registry", registry, "--release", f"base={release}", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["matches"][0]["basis"] == "weights"
    r = run("identify", suspect, "--registry", registry, "--release", "base")
    assert r.returncode != 0 and "expected NAME=DIR" in r.stderr


def test_a_release_recorded_in_the_registry_is_used_without_flags(llama, tiny_models, derived, tmp_path):
    """`registry add FP.json --release DIR` checks the release and records it, and takes the entry's
    invariants and heads from it (the file here holds v only); identify then scores a model
    suspect on that release's weights; a release that is gone leaves the fingerprint's score and a
    note."""
    from fingerprint.extract import extract
    from fingerprint.fpjson import save
    from fingerprint.identify import identify
    from fingerprint.registry import Registry, add_file
    from zkfp.errors import RegistryError

    base = tmp_path / "published"
    shutil.copytree(llama, base)
    twin = tiny_models("llama", seed=1, steps=150, layers=3)
    suspect = derived(llama, lambda m: lineage.drop_layer(m, 1), tmp_path / "drop")
    published = extract(base)
    save(published, tmp_path / "base-local.json")
    published.model.pop("tied_embeddings")  # as a file made before it was recorded
    save(published, tmp_path / "base.json", with_invariants=False)
    registry = tmp_path / "registry.sqlite"
    with Registry(registry) as reg:
        with pytest.raises(RegistryError, match="is not the model of .*nothing added"):
            add_file(reg, tmp_path / "base.json", "base", release=twin)
        assert len(reg) == 0
        entry = add_file(reg, tmp_path / "base.json", "base", release=base)
        assert entry.release == str(base.resolve()) and entry.model["tied_embeddings"] is False
        (best,) = identify(suspect, reg).matches
        assert (best.basis, best.verdict, best.note) == ("weights", "same-lineage", None)
        assert best.similarity == pytest.approx(W.compare_weights(base, suspect)["similarity"])
        (as_published,) = identify(tmp_path / "base-local.json", reg).matches  # an FP.json suspect: no weights
        assert (as_published.basis, as_published.similarity) == ("heads", pytest.approx(100.0))

    shutil.rmtree(base)
    r = subprocess.run([sys.executable, "-m", "zkfp.cli", "identify", str(suspect), "--registry", str(registry)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "heads" in r.stdout and f"note: its recorded release {base.resolve()} is gone" in r.stdout


def test_an_inconclusive_fingerprint_verdict_on_a_model_says_how_the_weights_decide(llama, tiny_models, tmp_path,
                                                                                      monkeypatch, capsys):
    """Where the fingerprint leaves a lineage open and the suspect is a model, `compare` and
    `identify` name the command that scores it on the weights; an FP.json suspect has none."""
    from fingerprint import compare as C
    from fingerprint.extract import extract
    from fingerprint.fpjson import save
    from fingerprint.registry import Registry, add_file
    from zkfp.cli import main

    twin = tiny_models("llama", seed=1, steps=150, layers=3)
    save(extract(llama), tmp_path / "base.json")
    save(extract(twin), tmp_path / "twin.json")
    with Registry(tmp_path / "r.sqlite") as reg:
        add_file(reg, tmp_path / "base.json", "base")
    advice = "inconclusive on the fingerprint; with the published release at hand, its weights decide:"

    def band(related: float, unrelated: float) -> None:  # the verdict set here, whatever this twin scores
        monkeypatch.setitem(C.THRESHOLDS, "gated", {basis: {**t, "related": related, "unrelated": unrelated}
                                                    for basis, t in C.THRESHOLDS["gated"].items()})

    band(101.0, 100.0)  # every score unrelated
    assert main(["compare", str(tmp_path / "base.json"), str(twin)]) == 0
    out = capsys.readouterr().out
    assert "unrelated" in out and advice not in out, out
    band(101.0, -101.0)  # every score inside the inconclusive band
    assert main(["compare", str(tmp_path / "base.json"), str(twin)]) == 0
    assert f"{advice} zkfp compare RELEASE_DIR {twin}" in capsys.readouterr().out
    assert main(["compare", str(tmp_path / "base.json"), str(tmp_path / "twin.json")]) == 0
    assert advice not in capsys.readouterr().out
    assert main(["identify", str(twin), "--registry", str(tmp_path / "r.sqlite")]) == 0
    assert f"base: {advice} zkfp identify {twin} --release base=RELEASE_DIR" in capsys.readouterr().out
