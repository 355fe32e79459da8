"""fingerprint/: invariance to T1-T6, GQA alignment, reading, tokens, FP.json, compare, CLI, release."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from fingerprint import compare as C
from fingerprint import disguise, spec
from fingerprint import extract as E
from fingerprint import fpjson
from fingerprint import invariants as inv
from fingerprint.compare import compare
from fingerprint.awm import awm_similarity, unbiased_cka, unbiased_hsic
from fingerprint.huref import huref_mlp_gated, huref_vector
from fingerprint.sources import open_source
from zkfp.errors import CheckpointError, FingerprintError, UnsupportedArchitecture


@pytest.mark.parametrize("transforms", [["T1"], ["T2"], ["T3"], ["T4"], ["T5"], ["T6"], list(disguise.LLAMA_TRANSFORMS)])
def test_llama_fingerprint_is_invariant_to_every_disguise(llama, disguised, tmp_path, transforms):
    a = E.extract(llama)
    b = E.extract(disguised(llama, transforms, tmp_path))
    assert inv.ics(a.invariant_tensor(), b.invariant_tensor()) > 99.999
    assert inv.ics(torch.tensor(a.v), torch.tensor(b.v)) > 99.999


@pytest.mark.parametrize("transforms", [["T1"], ["T2"], ["T3"], ["T4"], ["T5"], list(disguise.GPT2_TRANSFORMS)])
def test_gpt2_fingerprint_is_invariant_to_layernorm_safe_disguises(gpt2, disguised, tmp_path, transforms):
    a = E.extract(gpt2)
    b = E.extract(disguised(gpt2, transforms, tmp_path))
    assert inv.ics(a.invariant_tensor(), b.invariant_tensor()) > 99.999


def test_huref_formula_is_broken_by_rotation_and_gain_replacement(llama, disguised, tmp_path):
    ids = spec.select_tokens(512)
    copy = disguised(llama, ["T3", "T5"], tmp_path)
    assert inv.ics(huref_vector(llama, ids), huref_vector(copy, ids)) < 50
    assert inv.ics(E.extract(llama).invariant_tensor(), E.extract(copy).invariant_tensor()) > 99.999


def test_unbiased_cka_ignores_rotation_and_scale_of_the_features_and_centres_on_zero():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(300, 40, generator=g, dtype=torch.float64)
    O, _ = torch.linalg.qr(torch.randn(40, 40, generator=g, dtype=torch.float64))
    assert unbiased_cka(X.numpy(), (3.0 * X @ O).numpy()) == pytest.approx(1.0, abs=1e-12)
    independent = [unbiased_cka(X.numpy(), torch.randn(300, 40, generator=g, dtype=torch.float64).numpy())
                   for _ in range(5)]
    assert max(abs(c) for c in independent) < 0.02  # the biased estimator sits near 40/300 here


def test_unbiased_hsic_from_the_features_is_song_et_als_estimator():
    g = torch.Generator().manual_seed(1)
    A, B = (torch.randn(12, k, generator=g, dtype=torch.float64).numpy() for k in (5, 7))
    K, L = A @ A.T, B @ B.T
    K, L = K - np.diag(np.diag(K)), L - np.diag(np.diag(L))
    n, one = 12, np.ones(12)
    textbook = (np.trace(K @ L) + one @ K @ one * (one @ L @ one) / ((n - 1) * (n - 2))
                - 2 / (n - 2) * one @ K @ L @ one) / (n * (n - 3))
    assert unbiased_hsic(A, B) == pytest.approx(textbook, rel=1e-12)


def test_awm_baseline_undoes_a_residual_permutation_but_not_a_rotation(llama, disguised, tmp_path):
    assert awm_similarity(llama, disguised(llama, ["T1"], tmp_path)) == pytest.approx(100.0, abs=1e-6)
    rotated = disguised(llama, ["T3"], tmp_path)
    assert awm_similarity(llama, rotated) < 50 < compare(E.extract(llama), E.extract(rotated))["similarity"]


def test_gqa_term_is_head_aligned_and_hurefs_tiling_is_not():
    g = torch.Generator().manual_seed(0)
    d, H, KV, hd, k = 32, 4, 2, 8, 5
    X, Wq, Wk = torch.randn(k, d, generator=g), torch.randn(H * hd, d, generator=g), torch.randn(KV * hd, d, generator=g)
    Wv, Wo = torch.randn(KV * hd, d, generator=g), torch.randn(d, H * hd, generator=g)
    ref_a = sum(X @ Wq[h * hd:(h + 1) * hd].T @ Wk[(h // 2) * hd:(h // 2 + 1) * hd] @ X.T for h in range(H))
    ref_b = sum(X @ Wv[(h // 2) * hd:(h // 2 + 1) * hd].T @ Wo[:, h * hd:(h + 1) * hd].T @ X.T for h in range(H))
    torch.testing.assert_close(inv.term_qk(X, Wq, Wk, H, KV), ref_a, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(inv.term_vo(X, Wv, Wo, H, KV), ref_b, rtol=1e-4, atol=1e-3)
    tiled = X @ Wq.T @ torch.cat([Wk, Wk]) @ X.T
    assert (tiled - ref_a).abs().max() > 1.0


def test_neuron_space_product_is_rotation_invariant_but_hurefs_is_not():
    g = torch.Generator().manual_seed(1)
    d, f, k = 16, 24, 6
    X, G, U, D = (torch.randn(k, d, generator=g, dtype=torch.float64), torch.randn(f, d, generator=g, dtype=torch.float64),
                  torch.randn(f, d, generator=g, dtype=torch.float64), torch.randn(d, f, generator=g, dtype=torch.float64))
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    ours = inv.term_mlp_gated(X, G, U, D)
    torch.testing.assert_close(inv.term_mlp_gated(X @ Q, G @ Q, U @ Q, Q.T @ D), ours)
    assert (huref_mlp_gated(X @ Q, G @ Q, U @ Q, Q.T @ D) - huref_mlp_gated(X, G, U, D)).abs().max() > 1e-3


def test_reads_only_the_tensors_it_needs(llama, monkeypatch):
    from zkfp.checkpoint import Checkpoint

    read = []
    orig_get, orig_rows = Checkpoint.get, Checkpoint.get_rows
    monkeypatch.setattr(Checkpoint, "get", lambda self, n, dtype=None: read.append(n) or orig_get(self, n, dtype))
    monkeypatch.setattr(Checkpoint, "get_rows", lambda self, n, rows, dtype=None: read.append("rows:" + n) or orig_rows(self, n, rows, dtype))
    E.extract(llama)
    assert "rows:model.embed_tokens.weight" in read and "model.embed_tokens.weight" not in read
    assert all(any(f".layers.{i}." in n for n in read) for i in range(3))  # every layer is read
    assert "lm_head.weight" not in read and "model.norm.weight" not in read


def test_sharded_bf16_checkpoint_gives_the_same_fingerprint(llama, tmp_path):
    from transformers import AutoModelForCausalLM

    from zkfp.zoo.tiny import save

    sharded = save(AutoModelForCausalLM.from_pretrained(llama), tmp_path / "bf16", dtype=torch.bfloat16,
                   max_shard_size="100KB")
    assert inv.ics(E.extract(llama).invariant_tensor(), E.extract(sharded).invariant_tensor()) > 99.0


@pytest.mark.parametrize("family", ["qwen2", "mistral", "gpt_neox", "bert"])
def test_other_families_fingerprint(tiny_models, family):
    fp = E.extract(tiny_models(family, steps=5))
    layers = fp.spec["layers"]
    assert len(fp.v) == spec.M_DIM * layers and len(fp.invariants) == spec.invariant_length(layers)
    assert all(map(lambda x: x == x, fp.v))


def test_unrelated_seeds_are_far_apart_and_v_is_gaussian(tmp_path):
    from scipy import stats

    from zkfp.zoo.tiny import build, save

    vs, zs = [], []
    for seed in range(8):
        fp = E.extract(save(build("llama", seed=100 + seed, layers=2), tmp_path / f"s{seed}"))
        vs.append(fp.v)
        zs.append(fp.invariant_tensor())
    pooled = torch.tensor(vs).flatten().numpy()
    assert stats.normaltest(pooled).pvalue > 0.001
    assert stats.shapiro(pooled).pvalue > 0.001
    assert max(abs(inv.ics(zs[i], zs[j])) for i in range(8) for j in range(i)) < 20


def test_token_selection_is_public_deterministic_and_survives_vocab_extension():
    a = spec.select_tokens(32000)
    assert a == spec.select_tokens(32000) == spec.select_tokens(50000)  # extension appends ids
    assert len(a) == spec.K_TOKENS and all(spec.TOKEN_LO <= t < spec.TOKEN_HI for t in a)
    small = spec.select_tokens(512)
    assert all(256 <= t < 512 for t in small)
    assert spec.select_tokens(512, candidates=range(300, 400)) == spec.select_tokens(512, candidates=reversed(range(300, 400)))


def test_fp_json_roundtrip_records_spec_tokens_and_v(llama, tmp_path):
    fp = E.extract(llama)
    fpjson.save(fp, tmp_path / "fp.json")
    back = fpjson.load(tmp_path / "fp.json")
    assert back.spec["version"] == spec.SPEC_VERSION and back.spec["k"] == spec.K_TOKENS
    assert back.token_ids == fp.token_ids and back.v == fp.v and back.invariants == fp.invariants
    r = compare(back, fp)
    assert r["similarity"] == pytest.approx(100.0) and r["verdict"] == "same-lineage"


def test_bad_fingerprint_files_are_refused(llama, tmp_path):
    fp = E.extract(llama)
    fpjson.save(fp, tmp_path / "a.json")
    text = (tmp_path / "a.json").read_text()
    (tmp_path / "cut.json").write_text(text[: len(text) // 2])
    with pytest.raises(FingerprintError, match="not valid JSON"):
        fpjson.load(tmp_path / "cut.json")
    data = json.loads(text)
    data["v"] = data["v"][:-1]
    (tmp_path / "short.json").write_text(json.dumps(data))
    with pytest.raises(FingerprintError, match="v must be"):
        fpjson.load(tmp_path / "short.json")
    (tmp_path / "other.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(FingerprintError, match="not a zkfp fingerprint"):
        fpjson.load(tmp_path / "other.json")
    with pytest.raises(FingerprintError, match="not found"):
        fpjson.load(tmp_path / "missing.json")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "manifest.json").write_text(json.dumps({"format": "zkfp-taylor-release"}))
    with pytest.raises(FingerprintError, match="not a zkfp proof bundle"):
        fpjson.load(tmp_path / "folder")


def test_compare_refuses_other_spec_versions_and_token_lists(llama):
    a = E.extract(llama)
    b = E.extract(llama, token_ids=spec.select_tokens(512, candidates=range(300, 512)))
    with pytest.raises(FingerprintError, match="different token lists"):
        compare(a, b)
    c = E.extract(llama)
    c.spec = dict(c.spec, version="zkfp-fp/0")
    with pytest.raises(FingerprintError, match="different spec versions"):
        compare(a, c)


def test_missing_tensor_and_unsupported_architecture_are_clear_errors(llama, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    dst = tmp_path / "missing"
    shutil.copytree(llama, dst)
    tensors = load_file(dst / "model.safetensors")
    del tensors["model.layers.2.mlp.down_proj.weight"]
    save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="down_proj.weight.*missing"):
        E.extract(dst)
    cfg = json.loads((llama / "config.json").read_text())
    other = tmp_path / "t5"
    shutil.copytree(llama, other)
    (other / "config.json").write_text(json.dumps(dict(cfg, model_type="t5", architectures=["T5Model"])))
    with pytest.raises(UnsupportedArchitecture, match="unsupported architecture"):
        E.extract(other)


def test_a_fingerprint_records_whether_the_model_ties_its_head(llama, gpt2):
    assert E.extract(llama).model["tied_embeddings"] is False and E.extract(gpt2).model["tied_embeddings"] is True


def test_cli_fingerprint_and_compare(llama, gpt2, tmp_path):
    run = lambda *a: subprocess.run([sys.executable, "-m", "zkfp.cli", *a], capture_output=True, text=True)  # noqa: E731
    r = run("fingerprint", str(llama), "--out", str(tmp_path / "a.json"), "--image", str(tmp_path / "a.png"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert run("fingerprint", str(gpt2), "--out", str(tmp_path / "b.json"), "--no-invariants").returncode == 0
    r = run("compare", str(tmp_path / "a.json"), str(tmp_path / "a.json"), "--json")
    out = json.loads(r.stdout)
    assert out["verdict"] == "same-lineage" and out["similarity"] == pytest.approx(100.0)
    r = run("compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--json")
    out = json.loads(r.stdout)
    assert out["basis"] == "v" and out["verdict"] in ("unrelated", "inconclusive")
    assert out["tied"] is True  # GPT-2 ties its head, so the Llama is judged by the gated-tied thresholds
    assert out["thresholds"]["related"] == C.THRESHOLDS["gated-tied"]["v"]["related"]
    r = run("compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"))
    assert "a side ties its output head to the embedding" in r.stdout
    (tmp_path / "bad.json").write_text("{not json")
    r = run("compare", str(tmp_path / "a.json"), str(tmp_path / "bad.json"))
    assert r.returncode != 0 and "error:" in r.stderr
    r = run("fingerprint", str(tmp_path / "nowhere"), "--out", str(tmp_path / "c.json"))
    assert r.returncode != 0 and "does not exist" in r.stderr


def test_renderer_is_deterministic_torch_free_and_smooth():
    code = ("import sys, numpy as np; from fingerprint.render import png_bytes; "
            "b = png_bytes(np.linspace(-2, 2, 64)); assert 'torch' not in sys.modules; print(len(b))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    import numpy as np

    from fingerprint.render import image_similarity, png_bytes, render

    g = np.random.default_rng(0)
    v = g.standard_normal(64)
    assert png_bytes(v) == png_bytes(v)
    near = image_similarity(render(v), render(v + 0.05 * g.standard_normal(64)))
    far = np.mean([image_similarity(render(v), render(g.standard_normal(64))) for _ in range(5)])
    assert near > 0.95 and near > far + 0.2
    with pytest.raises(ValueError):
        render([0.0] * 10)


def test_taylor_release_gives_the_source_fingerprint(llama, tmp_path):
    taylor = pytest.importorskip("taylor")
    release = taylor.protect(llama, tmp_path / "release")
    a, b = E.extract(llama), E.extract(release)
    assert b.model["source"] == "taylor-release"
    assert a.token_ids == b.token_ids
    assert inv.ics(a.invariant_tensor(), b.invariant_tensor()) >= 99.9


@pytest.mark.parametrize("family", ["llama", "gpt2", "bert"])
def test_streaming_path_equals_the_pure_reference_functions(tiny_models, family):
    """The circuit compiles fingerprint.invariants.canonical_layer_terms; extract streams: same numbers."""
    from zkfp.architectures import ModelReader
    from zkfp.checkpoint import Checkpoint

    path = tiny_models(family, steps=5)
    fp, terms = E.extract(path, with_terms=True)
    src = open_source(path)
    r = ModelReader(Checkpoint(path))
    d = r.arch.dims
    X = src.embedding_rows(fp.token_ids)
    ref = []
    for i in range(d.layers):
        w = r.layer(i, torch.float32)
        ref.append(inv.canonical_layer_terms(
            X, src.attn_gain(i), w.q.weight, w.k.weight, w.v.weight, w.o.weight, src.mlp_gain(i), w.up.weight,
            w.down.weight, None if w.gate is None else w.gate.weight, d.heads, d.kv_heads,
            layer_norm=r.family.norm == "layer"))
    torch.testing.assert_close(torch.stack(ref), terms, rtol=1e-4, atol=1e-4 * float(terms.abs().max()))
    torch.testing.assert_close(inv.invariant_vector(torch.stack(ref)).float(), fp.invariant_tensor().float(),
                               rtol=1e-3, atol=1e-3)


def test_shipped_projection_is_the_seeded_one():
    from safetensors.torch import load_file

    from fingerprint.encoder import ASSET, projection_matrix

    w = load_file(str(ASSET))
    assert list(w) == ["projection"] and w["projection"].shape == (spec.M_DIM, spec.layer_length())
    torch.testing.assert_close(w["projection"], projection_matrix(), rtol=0, atol=0)


def test_cli_on_a_release_and_refusals(llama, tmp_path):
    taylor = pytest.importorskip("taylor")
    release = taylor.protect(llama, tmp_path / "release")
    run = lambda *a: subprocess.run([sys.executable, "-m", "zkfp.cli", *a], capture_output=True, text=True)  # noqa: E731
    assert run("fingerprint", str(release), "--out", str(tmp_path / "r.json")).returncode == 0
    assert run("fingerprint", str(llama), "--out", str(tmp_path / "m.json")).returncode == 0
    out = json.loads(run("compare", str(tmp_path / "r.json"), str(tmp_path / "m.json"), "--json").stdout)
    assert out["verdict"] == "same-lineage" and out["similarity"] >= 99.9
    data = json.loads((tmp_path / "m.json").read_text())
    data["token_ids"], data["tokens"] = list(reversed(data["token_ids"])), list(reversed(data["tokens"]))
    (tmp_path / "other-tokens.json").write_text(json.dumps(data))
    r = run("compare", str(tmp_path / "m.json"), str(tmp_path / "other-tokens.json"))
    assert r.returncode != 0 and "different token lists" in r.stderr
    data = json.loads((tmp_path / "m.json").read_text())
    data["spec"]["version"] = "zkfp-fp/999"
    (tmp_path / "other-spec.json").write_text(json.dumps(data))
    r = run("compare", str(tmp_path / "m.json"), str(tmp_path / "other-spec.json"))
    assert r.returncode != 0 and "different spec versions" in r.stderr
    data["spec"]["version"], data["token_ids"] = spec.SPEC_VERSION, [10**6] * spec.K_TOKENS
    del data["tokens"]  # ids alone: with the token strings the model's own ids for them would be read
    (tmp_path / "bad-ids.json").write_text(json.dumps(data))
    r = run("fingerprint", str(llama), "--out", str(tmp_path / "x.json"), "--tokens-from", str(tmp_path / "bad-ids.json"))
    assert r.returncode != 0 and "outside the model's vocabulary" in r.stderr
