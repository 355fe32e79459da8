"""taylor/: coefficients, guard, protect → load_release fidelity, release validation, audit."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch

from taylor import jets
from taylor.conversion import protect
from taylor.release import ReleaseReader
from taylor.runtime import TaylorMLP, guard_counts, load_release, set_terms
from zkfp.errors import ReleaseError, ZkfpError
from zkfp.files import sha256_file

PROMPTS = ["the quiet fox watches the", "count: two three", "a fern is old, and the", "three plus one is",
           "at the creek, every owl", "the clever hare"]


def _ids(text):
    from zkfp.zoo.tiny import encode

    return encode(text).unsqueeze(0)


def _original(model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()


def _greedy(model, text, k=24):
    with torch.no_grad():
        return model.generate(_ids(text), max_new_tokens=k, do_sample=False, pad_token_id=0)[0]


@pytest.fixture(scope="module")
def released(tiny_models, tmp_path_factory):
    """(checkpoint, release) per family, protected once per module."""
    root = tmp_path_factory.mktemp("releases")
    cache = {}

    def make(family="llama", n_terms=8, **kw):
        key = (family, n_terms, tuple(sorted(kw.items())))
        if key not in cache:
            ckpt = tiny_models(family)
            cache[key] = (ckpt, protect(ckpt, root / f"{family}-{n_terms}-{len(cache)}", n_terms=n_terms, **kw))
        return cache[key]

    return make


# -- coefficients ------------------------------------------------------------------------------


def _silu_derivs_leibniz(a: float, order: int) -> list[float]:
    """The official code's recurrence (research/taylor.md §1.2), in fp64: SiLU^{(n)}(a)."""
    s = [1 / (1 + math.exp(-a))]
    for k in range(order):
        s.append(s[k] - sum(math.comb(k, i) * s[i] * s[k - i] for i in range(k + 1)))
    return [a * s[0]] + [a * s[n] + n * s[n - 1] for n in range(1, order + 1)]


@pytest.mark.parametrize("a", [-2.0, -0.4, 0.0, 0.7, 3.0])
def test_silu_jet_matches_the_leibniz_recurrence(a):
    jet = jets.activation_jet("silu", np.array([a]), 12)[:, 0]
    ref = [d / math.factorial(n) for n, d in enumerate(_silu_derivs_leibniz(a, 12))]
    np.testing.assert_allclose(jet, ref, rtol=1e-9, atol=1e-14)


@pytest.mark.parametrize("activation,fn", [
    ("silu", torch.nn.functional.silu),
    ("gelu", torch.nn.functional.gelu),
    ("gelu_tanh", lambda x: torch.nn.functional.gelu(x, approximate="tanh")),
])
def test_jets_reproduce_the_activation_near_the_anchor(activation, fn):
    a = np.linspace(-3, 3, 13)
    coeffs = jets.activation_jet(activation, a, 10)
    for delta in (0.05, -0.2, 0.5):
        poly = sum(coeffs[n] * delta**n for n in range(11))
        exact = fn(torch.tensor(a + delta, dtype=torch.float64)).numpy()
        np.testing.assert_allclose(poly, exact, atol=5e-8 if abs(delta) < 0.3 else 2e-4)
    # first derivative against autograd
    x = torch.tensor(a, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(fn(x).sum(), x)
    np.testing.assert_allclose(coeffs[1], grad.numpy(), rtol=1e-10, atol=1e-12)


def test_silu_radius_is_sqrt_a2_plus_pi2():
    a = np.array([0.0, 1.5, -2.0])
    np.testing.assert_allclose(jets.convergence_radius("silu", a), np.sqrt(a**2 + np.pi**2))


def _scalar_mlp(n_terms, guard_radius, anchor=0.0):
    """A one-neuron plain TaylorMLP computing silu(x) (d = 1, W_in = W_down = 1)."""
    c = jets.activation_jet("silu", np.array([anchor]), n_terms)
    tensors = {"in_weight": torch.ones(1, 1), "anchor": torch.tensor([anchor]),
               "coeffs": torch.from_numpy(c).float().reshape(n_terms + 1, 1, 1),
               "guard_radius": torch.tensor([guard_radius]),
               "exact_in_weight": torch.zeros(0, 1), "exact_down_weight": torch.zeros(1, 0)}
    return TaylorMLP(tensors, "silu", guard_order=2)


def test_guard_keeps_error_non_increasing_in_n_and_prevents_divergence():
    x = torch.linspace(-7, 7, 2801).unsqueeze(-1)
    exact = torch.nn.functional.silu(x)
    radius = 0.75 * math.pi
    inside = x.abs().squeeze(-1) <= radius
    guarded, unguarded = [], []
    for n in range(2, 13):
        with torch.no_grad():
            guarded.append((_scalar_mlp(n, radius)(x) - exact).abs().squeeze(-1))
            unguarded.append((_scalar_mlp(n, float("inf"))(x) - exact).abs().squeeze(-1))
    worst = [e.max().item() for e in guarded]
    inner = [e[inside].max().item() for e in guarded]
    assert all(b <= a * (1 + 1e-5) + 1e-6 for a, b in zip(worst, worst[1:])), worst
    assert all(b <= a * (1 + 1e-5) + 1e-6 for a, b in zip(inner, inner[1:])), inner
    assert inner[-1] < 0.1 * inner[0]  # at the edge (0.75 R) convergence is slow: ~0.75^N
    # without the guard the series diverges beyond π: 12 terms are far worse than 4
    assert unguarded[-1].max() > 10 * unguarded[2].max()
    assert worst[-1] < unguarded[-1].max() / 100


# -- protect → load_release → generate ------------------------------------------------------


@pytest.mark.parametrize("family", ["llama", "gpt2", "gpt_neox"])
def test_release_generates_the_original_greedy_tokens(released, family):
    ckpt, rel = released(family)
    original, protected = _original(ckpt), load_release(rel)
    assert sum(isinstance(m, TaylorMLP) for m in protected.modules()) == original.config.num_hidden_layers
    for text in PROMPTS:
        a, b = _greedy(original, text), _greedy(protected, text)
        assert torch.equal(a, b), (family, text)
    with torch.no_grad():
        ids = _greedy(original, PROMPTS[0], 48).unsqueeze(0)
        err = (original(ids).logits - protected(ids).logits).abs().max().item()
    assert err < 1e-2


def test_guard_counts_tally_every_expanded_evaluation_and_each_fallback():
    x = torch.tensor([[-6.0], [-1.0], [0.0], [2.0], [5.0]])  # |x| > 0.75π at -6 and 5
    mlp = _scalar_mlp(8, 0.75 * math.pi)
    with torch.no_grad():
        mlp(x)  # outside guard_counts(): nothing is counted
        with guard_counts(mlp) as counts:
            mlp(x)
            mlp(x[:2])
    assert mlp.counts is None
    assert (counts[0].evaluations, counts[0].fell_back) == (7, 3)
    assert counts[0].fraction == pytest.approx(3 / 7)


def test_guard_counts_of_a_generation_cover_every_token_and_block(released):
    ckpt, rel = released("llama")
    model = load_release(rel)
    ids = _ids(PROMPTS[0])
    with torch.no_grad(), guard_counts(model) as counts:
        model.generate(ids, max_new_tokens=5, min_new_tokens=5, do_sample=False, pad_token_id=0)
    layers = json.loads((rel / "manifest.json").read_text())["layers"]
    tokens = ids.shape[1] + 5 - 1  # the prompt, then each generated token but the last is fed back
    assert [c.evaluations for c in counts] == [tokens * len(layer["expanded"]) for layer in layers]
    for m in model.modules():
        if isinstance(m, TaylorMLP):
            m.guard_radius.zero_()  # every element is now beyond the guard
    with torch.no_grad(), guard_counts(model) as counts:
        model(ids)
    assert all(c.fell_back == c.evaluations == ids.shape[1] * len(layer["expanded"])
               for c, layer in zip(counts, layers))


def test_bf16_sharded_llama_release(tiny_models, tmp_path):
    from zkfp.zoo.tiny import save

    src = save(_original(tiny_models("llama")), tmp_path / "bf16", dtype=torch.bfloat16, max_shard_size="100KB")
    assert (src / "model.safetensors.index.json").is_file()
    rel = protect(src, tmp_path / "rel", n_terms=8)
    manifest = json.loads((rel / "manifest.json").read_text())
    assert manifest["dtypes"]["source_weights"] == ["BF16"]
    original, protected = _original(src), load_release(rel)
    for text in PROMPTS[:4]:
        assert torch.equal(_greedy(original, text), _greedy(protected, text))


def test_logit_error_shrinks_with_more_terms(released):
    ckpt, rel = released("llama", n_terms=12)
    original, protected = _original(ckpt), load_release(rel)
    ids = torch.cat([_ids(t)[0] for t in PROMPTS]).unsqueeze(0)
    with torch.no_grad():
        ref = original(ids).logits
        errs = []
        for n in range(2, 13, 2):
            set_terms(protected, n)
            errs.append((protected(ids).logits - ref).abs().max().item())
    assert all(b <= a * 1.05 + 1e-5 for a, b in zip(errs, errs[1:])), errs
    assert errs[-1] < errs[0] / 10


def test_default_calibration_needs_no_tokenizer(tiny_models, tmp_path):
    ckpt = tiny_models("llama")
    bare = tmp_path / "bare"
    shutil.copytree(ckpt, bare)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (bare / name).unlink(missing_ok=True)
    with_tok, without = protect(ckpt, tmp_path / "a", n_terms=8), protect(bare, tmp_path / "b", n_terms=8)
    ma, mb = (json.loads((r / "manifest.json").read_text()) for r in (with_tok, without))
    assert "random token ids" in ma["calibration"]["source"] and ma["calibration"] == mb["calibration"]
    assert ma["layers"] == mb["layers"]
    a, b = ReleaseReader(with_tok), ReleaseReader(without)
    assert torch.equal(a.mlp(0)["anchor"], b.mlp(0)["anchor"])


def test_neurons_whose_series_cannot_be_certified_stay_exact():
    from taylor.conversion import certified, select_expanded

    lo = np.array([-0.2, -0.5, -3.0, 1.0, -0.1])
    hi = np.array([0.2, 0.5, 3.0, 1.1, 0.3])
    # ±3: beyond the guard radius (0.75π at 0) once widened; the others are narrow
    ok = certified("silu", lo, hi, 12, margin=0.5, tol=1e-4)
    assert ok.tolist() == [True, True, False, True, True]
    assert not certified("silu", lo, hi, 2, margin=0.5, tol=1e-4)[1]  # 2 terms: too coarse on ±1
    assert select_expanded(lo, hi, 0.6, ok).tolist() == [0, 3, 4]  # smallest ranges, certified only
    assert select_expanded(lo, hi, 1.0, ok).tolist() == [0, 1, 3, 4]  # fewer than asked when fewer qualify


@pytest.mark.parametrize("family, gate", [("llama", "model.layers.0.mlp.gate_proj.weight"),
                                          ("gpt2", "transformer.h.0.mlp.c_fc.weight")])
def test_beyond_the_guard_radius_a_release_is_exact_not_truncated(tiny_models, tmp_path, family, gate):
    """Inputs ×40 on every other neuron of block 0 push many pre-activations past the guard radius
    (GPT-2 also has a folded first-layer bias there); the release still matches the model."""
    from safetensors.torch import load_file, save_file

    wide = tmp_path / "wide"
    shutil.copytree(tiny_models(family), wide)
    tensors = load_file(wide / "model.safetensors")
    w = tensors[gate]
    if family == "gpt2":  # Conv1D stores (in, out)
        w[:, ::2] *= 40
    else:
        w[::2] *= 40
    save_file(tensors, wide / "model.safetensors", metadata={"format": "pt"})
    original, protected = _original(wide), load_release(protect(wide, tmp_path / "rel"))
    with guard_counts(protected) as counts:
        for text in PROMPTS:
            assert torch.equal(_greedy(original, text), _greedy(protected, text)), text
        ids = _greedy(original, PROMPTS[0], 48).unsqueeze(0)
        with torch.no_grad():
            err = (original(ids).logits - protected(ids).logits).abs().max().item()
    assert counts[0].fraction > 0.05  # the guard did fall back, often
    assert err < 1e-2, err  # the bound of test_release_generates_the_original_greedy_tokens


def test_beyond_the_guard_radius_one_neuron_equals_its_activation():
    delta = torch.linspace(-9, 9, 3601).unsqueeze(-1)
    for anchor in (0.0, -1.2785, 2.0):  # -1.2785: SiLU' ≈ 0 there, the remainder rides on another order
        radius = 0.75 * jets.convergence_radius("silu", np.array([anchor])).item()
        beyond = delta.abs().squeeze(-1) > radius
        with torch.no_grad():
            err = (_scalar_mlp(12, radius, anchor)(delta + anchor) - torch.nn.functional.silu(delta + anchor)).abs()
        assert err[beyond].max() < 1e-5, anchor  # exact out there (fp32), where the series is not used
        assert err[~beyond].max() < 0.05, anchor  # within the radius: the 12-term series (~0.75^12 at its edge)


def test_manifest_records_the_contract(released):
    ckpt, rel = released("llama")
    m = json.loads((rel / "manifest.json").read_text())
    assert m["format_version"] == 1 and m["n_terms"] == 8
    assert m["source"]["architecture"] == "LlamaForCausalLM"
    inter = m["source"]["config"]["intermediate_size"]
    for layer in m["layers"]:
        assert len(layer["expanded"]) == round(inter * 10000 / 14336)
    assert m["calibration"]["certified"] is None  # certification is opt-in (protect(certify=True))
    for name, info in m["files"].items():
        assert sha256_file(rel / name) == info["sha256"]
    assert {"config.json", "tokenizer.json", "base.safetensors", "layer-00000.safetensors"} <= set(m["files"])


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_expanded_down_projection_columns_are_not_in_the_clear(released, family):
    from zkfp.architectures import ModelReader
    from zkfp.checkpoint import Checkpoint

    ckpt, rel = released(family)
    reader, orig = ReleaseReader(rel), ModelReader(Checkpoint(ckpt))
    for i in range(reader.arch.dims.layers):
        down = orig.linear(orig.family.down, i).weight.float()  # (d, I)
        protected = down[:, torch.from_numpy(reader.expanded(i))]  # (d, |S|)
        for name in reader.names:
            t = reader.get(name, torch.float32)
            for axis, size in enumerate(t.shape):
                if size != down.shape[0]:
                    continue
                vecs = t.movedim(axis, -1).reshape(-1, size)  # every vector along the hidden axis
                dist = torch.cdist(vecs, protected.t())
                assert dist.min() > 1e-4 * protected.norm(dim=0).min(), (name, axis)


# -- validation of a release ----------------------------------------------------------------


def _copy(rel, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(rel, dst)
    return dst


def _resave(dst, file_name, edit, fix_hash=True):
    from safetensors.torch import load_file, save_file

    tensors = load_file(dst / file_name)
    edit(tensors)
    save_file(tensors, str(dst / file_name))
    if fix_hash:
        m = json.loads((dst / "manifest.json").read_text())
        m["files"][file_name]["sha256"] = sha256_file(dst / file_name)
        (dst / "manifest.json").write_text(json.dumps(m))


def test_tampered_byte_is_a_named_hash_mismatch(released, tmp_path):
    dst = _copy(released("llama")[1], tmp_path)
    data = bytearray((dst / "layer-00001.safetensors").read_bytes())
    data[-5] ^= 0x01
    (dst / "layer-00001.safetensors").write_bytes(bytes(data))
    with pytest.raises(ReleaseError, match="sha256 mismatch for layer-00001.safetensors"):
        load_release(dst)


def test_missing_extra_and_misshaped_tensors_are_named(released, tmp_path):
    rel = released("llama")[1]
    name = "taylor.layers.0.coeffs"

    dst = _copy(rel, tmp_path / "a")
    _resave(dst, "layer-00000.safetensors", lambda t: t.pop(name))
    with pytest.raises(ReleaseError, match=f"tensor missing from layer-00000.safetensors: {name}"):
        ReleaseReader(dst)

    dst = _copy(rel, tmp_path / "b")
    _resave(dst, "layer-00000.safetensors", lambda t: t.update({"smuggled.weight": torch.zeros(2)}))
    with pytest.raises(ReleaseError, match="unexpected tensor in layer-00000.safetensors: smuggled.weight"):
        ReleaseReader(dst)

    dst = _copy(rel, tmp_path / "c")
    _resave(dst, "layer-00000.safetensors", lambda t: t.update({name: t[name][:-1].clone()}))
    with pytest.raises(ReleaseError, match=f"tensor {name} in layer-00000.safetensors has shape"):
        ReleaseReader(dst)

    # a manifest edited to match a wrong shape is still refused: shapes follow from config, N and S
    m = json.loads((dst / "manifest.json").read_text())
    m["tensors"][name]["shape"][0] -= 1
    (dst / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ReleaseError, match=f"tensor {name} has shape .* expected"):
        ReleaseReader(dst)


def test_unknown_format_version_and_stray_files_are_refused(released, tmp_path):
    rel = released("llama")[1]
    dst = _copy(rel, tmp_path / "a")
    m = json.loads((dst / "manifest.json").read_text())
    m["format_version"] = 99
    (dst / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ReleaseError, match="unknown release format_version 99"):
        ReleaseReader(dst)

    dst = _copy(rel, tmp_path / "b")
    (dst / "notes.txt").write_text("hi")
    with pytest.raises(ReleaseError, match="unexpected file in release .*notes.txt"):
        ReleaseReader(dst)

    dst = _copy(rel, tmp_path / "c")
    (dst / "base.safetensors").unlink()
    with pytest.raises(ReleaseError, match="release file missing: base.safetensors"):
        ReleaseReader(dst)


# -- atomic output ----------------------------------------------------------------------------


def test_existing_output_needs_force_and_failures_leave_nothing(tiny_models, tmp_path, monkeypatch):
    import taylor.conversion as conversion

    ckpt = tiny_models("llama")
    out = tmp_path / "rel"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ZkfpError, match="output exists.*--force"):
        protect(ckpt, out)
    assert (out / "keep.txt").read_text() == "mine"

    calls = {"n": 0}
    real = conversion.jets.activation_jet

    def failing(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 2:  # second layer: the first layer's file is already written
            raise RuntimeError("disk on fire")
        return real(*args, **kw)

    monkeypatch.setattr(conversion.jets, "activation_jet", failing)
    with pytest.raises(RuntimeError, match="disk on fire"):
        protect(ckpt, out, force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rel"]
    assert (out / "keep.txt").read_text() == "mine"
    monkeypatch.undo()

    protect(ckpt, out, force=True)
    assert not (out / "keep.txt").exists() and ReleaseReader(out).n_terms == 12
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rel"]


# -- audit ------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_audit_recovers_the_protected_weights(released, family):
    from taylor.audit import audit

    ckpt, rel = released(family)
    report = audit(rel, original=ckpt)
    assert report.expanded > 0
    assert report.fit_fraction == 1.0
    assert report.recovered_fraction == 1.0
    assert report.max_rel_error < 1e-5


def test_audit_against_an_unrelated_model_recovers_nothing(released, tmp_path):
    from taylor.audit import audit
    from zkfp.zoo.tiny import build, save

    _, rel = released("llama")
    other = save(build("llama", seed=1), tmp_path / "other")  # same shapes, other weights
    report = audit(rel, original=other)
    assert report.recovered_fraction == 0.0 and report.max_rel_error > 0.5


def test_effective_down_matches_the_original(released):
    from taylor import effective_down, effective_mlp
    from zkfp.architectures import ModelReader
    from zkfp.checkpoint import Checkpoint

    ckpt, rel = released("gpt_neox")
    orig = ModelReader(Checkpoint(ckpt))
    for i in range(2):
        eff = effective_mlp(rel, i)
        torch.testing.assert_close(effective_down(rel, i), orig.linear(orig.family.down, i).weight,
                                   rtol=1e-5, atol=1e-6)
        up = orig.linear(orig.family.up, i)
        torch.testing.assert_close(eff.up, up.weight)
        torch.testing.assert_close(eff.up_bias, up.bias, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("family", ["gpt2", "gpt_neox"])
def test_the_runtime_recovers_folded_biases_from_the_first_orders(released, family):
    """The exact evaluation beyond the guard radius needs t = anchor + the unreleased bias."""
    from taylor.runtime import _centers
    from zkfp.architectures import ModelReader
    from zkfp.checkpoint import Checkpoint

    ckpt, rel = released(family)
    orig, reader = ModelReader(Checkpoint(ckpt)), ReleaseReader(rel)
    for i in range(reader.arch.dims.layers):
        tensors = reader.mlp(i)
        bias = orig.linear(orig.family.up, i).bias.double().numpy()[reader.expanded(i)]
        np.testing.assert_allclose(_centers(reader, tensors), tensors["anchor"].double().numpy() + bias, atol=1e-6)


def test_attention_tensor_of_the_wrong_shape_is_named_even_with_a_consistent_manifest(released, tmp_path):
    rel = released("llama")[1]
    name = "model.layers.1.self_attn.q_proj.weight"
    dst = _copy(rel, tmp_path)
    _resave(dst, "layer-00001.safetensors", lambda t: t.update({name: t[name][:-1].clone()}))
    m = json.loads((dst / "manifest.json").read_text())
    m["tensors"][name]["shape"][0] -= 1
    (dst / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ReleaseError, match=f"tensor {name} has shape .* the config implies"):
        load_release(dst)
