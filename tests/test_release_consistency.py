"""circuits.consistency: every stored Taylor order (and the guard radius) must match the proven orders.

The proof reads orders 1 and 2 of the last blocks; the runtime uses Θ_0..Θ_N and guard_radius.
These tests are the specification of the check that binds the two: honest releases pass with
float32-level residuals, a release with any single order (or the guard radii) of one block taken
from another model of the same shape is refused with the tensor, the order and the neuron named.

Worst honest residuals measured when the tolerance was chosen (relative residual as
circuits.consistency reports it, compared with RTOL = 1e-4; u = 2^-24):
  Llama / SiLU, N = 12 (embedded model and a seed-3 model, both blocks):
      ≤ 2.1e-7 (≈ 3.4 u) wherever c_n does not nearly vanish; 4.9e-6 overall, at neurons whose
      c_8..c_12 nearly vanish, where the fp32 rounding of the anchor dominates (residual ≈ 0.4 ×
      the first-order anchor-rounding term, which the check allows 4 times over);
      guard radius ≤ 5.1e-8 (≈ 0.85 u).
  GPT-2 / tanh-GELU and erf-GELU, N = 12 (bias folded, 5 and 150 training steps, all blocks):
      ≤ 4.1e-7 (≤ 1.6e-7 away from vanishing c_n); guard radius ≤ 6.1e-8. Ignoring the folded
      bias instead gives residuals of 3..140 and guard differences of 2e-3..1e-2: refused.
A column taken from another model gives relative residuals of 0.5..100 (order 0: ~64, order 12:
~49 on the last block here); a guard radius from another model, 1.5e-2.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from circuits.consistency import (GUARD_RTOL, RTOL, check_coefficients, check_guard_radius,
                                  check_taylor_consistency, coefficient_residuals, guard_residuals)
from circuits.inputs import Release
from zkfp.errors import ReleaseError

REPO = Path(__file__).resolve().parent.parent
HONEST_BOUND = RTOL / 2  # honest: ≤ ~RTOL/4 by construction where c_n vanishes, a few u elsewhere (docstring)
EMBEDDED_SHAPE = dict(hidden=64, layers=2, heads=4, kv_heads=2, intermediate=172)  # zkfp.zoo.embedded.SPEC


@pytest.fixture(scope="module")
def llama_releases(tiny_models, tmp_path_factory):
    """(release of the embedded Llama, release of another Llama of the same shape), protected once."""
    import taylor
    from zkfp.zoo import embedded

    root = tmp_path_factory.mktemp("consistency")
    honest = taylor.protect(embedded.path(), root / "honest")
    other_src = tiny_models("llama", seed=3, steps=20, **EMBEDDED_SHAPE)
    other = taylor.protect(other_src, root / "other")
    return Path(honest), Path(other)


def _last(rel_dir: Path) -> int:
    return len(json.loads((rel_dir / "manifest.json").read_text())["layers"]) - 1


def _tampered(honest: Path, other: Path, tmp_path: Path, edit) -> Path:
    """A copy of `honest` whose last block file is rewritten by edit(tensors, other_tensors, key)."""
    out = tmp_path / "tampered"
    shutil.copytree(honest, out)
    i = _last(honest)
    fname = f"layer-{i:05d}.safetensors"
    tensors = load_file(str(out / fname))
    edit(tensors, load_file(str(other / fname)), lambda name: f"taylor.layers.{i}.{name}")
    save_file(tensors, str(out / fname))
    return out


# -- honest releases ---------------------------------------------------------------------------


def test_honest_llama_release_passes_every_block(llama_releases):
    for rel_dir in llama_releases:
        rel = Release(rel_dir)
        report = check_taylor_consistency(rel, range(len(rel.layers_info)))
        assert set(report) == set(range(len(rel.layers_info)))
        for worst in report.values():
            assert worst["coeffs"] < HONEST_BOUND, report
            assert worst["guard_radius"] < 20 * 2.0 ** -24, report


def test_honest_residuals_are_float32_noise_away_from_vanishing_coefficients(llama_releases):
    rel = Release(llama_releases[0])
    i = _last(llama_releases[0])
    n_seen = []
    for fit in coefficient_residuals(rel.activation, rel.mlp(i, "anchor"), rel.mlp(i, "coeffs")):
        n_seen.append(fit.order)
        away = fit.slack / RTOL < 0.01 * fit.scale           # c_n not nearly zero
        plain = fit.residual[away] / fit.scale[away]
        assert plain.max(initial=0.0) < 16 * 2.0 ** -24, (fit.order, plain.max())
    assert n_seen[:2] == [1, 2] and sorted(n_seen) == list(range(rel.n_terms + 1))


def test_coeffs_are_read_one_order_at_a_time(llama_releases, monkeypatch):
    rel = Release(llama_releases[0])
    i = _last(llama_releases[0])
    whole = check_coefficients(rel.activation, rel.mlp(i, "anchor"), rel.mlp(i, "coeffs"))

    def get(name, _orig=rel.get):
        assert not name.endswith("coeffs"), "the whole coeffs tensor was loaded"
        return _orig(name)

    monkeypatch.setattr(rel, "get", get)
    assert check_taylor_consistency(rel, [i])[i]["coeffs"] == whole  # same bytes, read order by order


def test_consistency_module_imports_no_torch(llama_releases):
    code = ("import sys; from circuits.consistency import check_taylor_consistency; "
            "from circuits.inputs import Release; "
            f"r = Release({str(llama_releases[0])!r}); check_taylor_consistency(r, [0, 1]); "
            "bad = [m for m in ('torch', 'transformers') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stdout + r.stderr


# -- a release mixing models is refused --------------------------------------------------------


@pytest.mark.parametrize("order", [0, 5, 12])
def test_an_order_from_another_model_is_refused(llama_releases, tmp_path, order):
    honest, other = llama_releases
    i = _last(honest)

    def splice(t, o, key):
        t[key("coeffs")][order] = o[key("coeffs")][order]

    rel = Release(_tampered(honest, other, tmp_path, splice))
    assert rel.n_terms == 12
    check_taylor_consistency(rel, [i - 1])  # the untouched block still passes
    with pytest.raises(ReleaseError, match=rf"taylor\.layers\.{i}\.coeffs order {order}, neuron \d+ "
                                           rf"\(column \d+\): not the column the proof read \(relative residual"):
        check_taylor_consistency(rel, [i - 1, i])


def test_a_proven_order_from_another_model_is_refused(llama_releases, tmp_path):
    honest, other = llama_releases
    i = _last(honest)

    def splice(t, o, key):
        t[key("coeffs")][2] = o[key("coeffs")][2]

    rel = Release(_tampered(honest, other, tmp_path, splice))
    with pytest.raises(ReleaseError, match=rf"taylor\.layers\.{i}\.coeffs order [12], .*proven orders \(1, 2\)"):
        check_taylor_consistency(rel, [i])


def test_one_neuron_one_order_slightly_off_is_named(llama_releases, tmp_path):
    """A single column of Θ_7 scaled by 1.001 (well above fp32 noise) is found and named."""
    honest, other = llama_releases
    i = _last(honest)
    j = 17
    neuron = json.loads((honest / "manifest.json").read_text())["layers"][i]["expanded"][j]

    def nudge(t, _o, key):
        t[key("coeffs")][7, :, j] *= np.float32(1.001)

    rel = Release(_tampered(honest, other, tmp_path, nudge))
    with pytest.raises(ReleaseError, match=rf"coeffs order 7, neuron {neuron} \(column {j}\): .* 1 of 120 neurons"):
        check_taylor_consistency(rel, [i])


def test_non_finite_coefficients_are_refused(llama_releases, tmp_path):
    honest, other = llama_releases
    i = _last(honest)

    def poison(t, _o, key):
        t[key("coeffs")][9, 3, 5] = np.nan

    rel = Release(_tampered(honest, other, tmp_path, poison))
    with pytest.raises(ReleaseError, match=r"coeffs order 9, neuron \d+ \(column 5\).*non-finite"):
        check_taylor_consistency(rel, [i])


def test_guard_radius_from_another_model_is_refused(llama_releases, tmp_path):
    honest, other = llama_releases
    i = _last(honest)

    def splice(t, o, key):
        t[key("guard_radius")] = o[key("guard_radius")]

    rel = Release(_tampered(honest, other, tmp_path, splice))
    with pytest.raises(ReleaseError, match=rf"taylor\.layers\.{i}\.guard_radius, neuron \d+ \(column \d+\): "
                                           r"not 0\.75 × the series' radius"):
        check_taylor_consistency(rel, [i])


def test_guard_radius_slightly_widened_is_refused(llama_releases, tmp_path):
    honest, other = llama_releases
    i = _last(honest)

    def widen(t, _o, key):
        t[key("guard_radius")][40] *= np.float32(1 + 100 * GUARD_RTOL)

    rel = Release(_tampered(honest, other, tmp_path, widen))
    with pytest.raises(ReleaseError, match=r"guard_radius, neuron \d+ \(column 40\)"):
        check_taylor_consistency(rel, [i])


def test_guard_rule_other_than_conversions_is_refused(llama_releases, tmp_path):
    out = tmp_path / "rel"
    shutil.copytree(llama_releases[0], out)
    m = json.loads((out / "manifest.json").read_text())
    m["guard"]["order"] = 12
    (out / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ReleaseError, match="guard"):
        check_taylor_consistency(Release(out), [_last(out)])


# -- array level: any MLP family ---------------------------------------------------------------


def _gpt2_release(tmp_path: Path, activation_function: str, seed: int = 0):
    """(source checkpoint, release) of a tiny GPT-2 trained 5 steps, with the given activation."""
    import taylor
    import torch
    from transformers import AutoModelForCausalLM

    from zkfp.zoo.corpus import generate
    from zkfp.zoo.tiny import encode, save, tiny_config, train

    cfg = tiny_config("gpt2", layers=2)
    cfg.activation_function = activation_function
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg).float()
    train(model, encode(generate("forest", n_sentences=400, seed=seed)), steps=5, seed=seed)
    src = save(model, tmp_path / f"gpt2-{activation_function}-{seed}")
    return src, taylor.protect(src, tmp_path / f"rel-{activation_function}-{seed}")


def _gpt2_block(src: Path, rel: Path, i: int):
    m = json.loads((rel / "manifest.json").read_text())
    s = np.asarray(m["layers"][i]["expanded"])
    t = load_file(str(rel / m["layers"][i]["file"]))
    bias = load_file(str(src / "model.safetensors"))[f"transformer.h.{i}.mlp.c_fc.bias"][s]
    key = f"taylor.layers.{i}."
    return m["activation"], t[key + "anchor"], t[key + "coeffs"], t[key + "guard_radius"], bias


@pytest.mark.parametrize("act,expected", [("gelu_new", "gelu_tanh"), ("gelu", "gelu")])
def test_gpt2_coefficients_pass_with_the_folded_bias(tmp_path, act, expected):
    src, rel = _gpt2_release(tmp_path, act)
    # the release-level check recovers the unreleased bias from the orders (circuits.inputs.expansion_points)
    assert max(r["coeffs"] for r in check_taylor_consistency(Release(rel), [0, 1]).values()) < HONEST_BOUND
    for i in range(2):
        activation, anchor, coeffs, guard, bias = _gpt2_block(src, rel, i)
        assert activation == expected and np.abs(bias).max() > 0
        assert check_coefficients(activation, anchor, coeffs, bias=bias) < HONEST_BOUND
        assert check_guard_radius(activation, anchor, guard, bias=bias) < 20 * 2.0 ** -24
        # the anchor alone is not the point the derivatives were taken at: the bias must be folded back
        with pytest.raises(ReleaseError, match=r"coeffs order \d+"):
            check_coefficients(activation, anchor, coeffs)
        with pytest.raises(ReleaseError, match=r"guard_radius"):
            check_guard_radius(activation, anchor, guard)


def test_gpt2_order_zero_from_another_model_is_refused(tmp_path):
    src, rel = _gpt2_release(tmp_path, "gelu_new", seed=0)
    _, rel2 = _gpt2_release(tmp_path, "gelu_new", seed=1)
    activation, anchor, coeffs, _, bias = _gpt2_block(src, rel, 1)
    coeffs = coeffs.copy()
    coeffs[0] = _gpt2_block(src, rel2, 1)[2][0]
    with pytest.raises(ReleaseError, match=r"^taylor\.layers\.1\.coeffs order 0, neuron \d+: not the column"):
        check_coefficients(activation, anchor, coeffs, bias=bias, name="taylor.layers.1.coeffs")


def _synthetic(activation, lim, seed=1, d=48, s=4000, n_terms=12):
    """Conversion's arithmetic on s random anchors in [-lim, lim], a folded bias for the GELUs:
    (anchor, coeffs, guard_radius, bias, point)."""
    from taylor.jets import activation_jet, convergence_radius

    rng = np.random.default_rng(seed)
    t = rng.uniform(-lim, lim, s)                          # the point derivatives are taken at
    bias = None if activation == "silu" else rng.normal(0.0, 0.5, s).astype(np.float32)
    z0 = t if bias is None else t - bias.astype(np.float64)
    down = (rng.standard_normal((d, s)) * 0.05).astype(np.float32).astype(np.float64)
    c = activation_jet(activation, t, n_terms)
    coeffs = np.stack([(down * c[n]).astype(np.float32) for n in range(n_terms + 1)])
    guard = (0.75 * convergence_radius(activation, t)).astype(np.float32)
    return z0.astype(np.float32), coeffs, guard, bias, t


@pytest.mark.parametrize("activation", ["silu", "gelu", "gelu_tanh"])
def test_synthetic_honest_coefficients_pass_across_anchors(activation):
    """4000 anchors over [-6, 6] (zeros of every c_n are crossed): passes, away from vanishing c_n
    the residual is fp32 noise, and one column of one order taken from a neighbour is found."""
    anchor, coeffs, guard, bias, t = _synthetic(activation, 6.0)
    assert check_coefficients(activation, anchor, coeffs, bias=bias) < HONEST_BOUND
    for fit in coefficient_residuals(activation, anchor, coeffs, bias=bias):
        away = fit.slack / RTOL < 0.01 * fit.scale
        assert (fit.residual[away] / fit.scale[away]).max() < 16 * 2.0 ** -24
    coeffs[4, :, 123] = coeffs[4, :, 124]
    with pytest.raises(ReleaseError, match=r"coeffs order 4, neuron 123: not the column .* 1 of 4000"):
        check_coefficients(activation, anchor, coeffs, bias=bias)


@pytest.mark.parametrize("activation", ["silu", "gelu", "gelu_tanh"])
def test_synthetic_far_anchors_pass(activation):
    """Anchors out to ±30: fp32 underflow (erf-GELU below ≈ −13) and fp64 jet noise are allowed for."""
    anchor, coeffs, _, bias, _ = _synthetic(activation, 30.0, seed=2, d=16, s=3000)
    assert check_coefficients(activation, anchor, coeffs, bias=bias) < HONEST_BOUND


@pytest.mark.parametrize("activation", ["silu", "gelu", "gelu_tanh"])
def test_synthetic_guard_radius(activation):
    anchor, _, guard, bias, t = _synthetic(activation, 6.0)
    fit = guard_residuals(activation, anchor, guard, bias=bias)
    if activation == "gelu_tanh":  # its fp64 high-order jets are noise below ≈ −3.5: undetermined there
        assert fit.undetermined.any() and t[fit.undetermined].max() < -3.0
        with pytest.raises(ReleaseError, match="cannot be checked"):
            check_guard_radius(activation, anchor, guard, bias=bias, strict=True)
    else:
        assert not fit.undetermined.any()
        check_guard_radius(activation, anchor, guard, bias=bias, strict=True)
    assert check_guard_radius(activation, anchor, guard, bias=bias) < GUARD_RTOL / 2
    guard[7] *= np.float32(1.01)
    guard[np.flatnonzero(fit.undetermined)] = 0.0          # skipped, whatever they hold
    with pytest.raises(ReleaseError, match=r"^guard_radius, neuron 7: .* 1 of 4000"):
        check_guard_radius(activation, anchor, guard, bias=bias)


def test_streamed_orders_equal_the_array(llama_releases):
    rel = Release(llama_releases[0])
    anchor, coeffs = rel.mlp(1, "anchor"), rel.mlp(1, "coeffs")
    calls = []

    def get(n):
        calls.append(n)
        return coeffs[n]

    a = check_coefficients(rel.activation, anchor, coeffs)
    b = check_coefficients(rel.activation, anchor, (get, coeffs.shape[0]))
    assert a == b and sorted(set(calls)) == list(range(coeffs.shape[0]))


def test_bad_orders_argument_is_refused(llama_releases):
    rel = Release(llama_releases[0])
    with pytest.raises(ReleaseError, match="orders"):
        check_taylor_consistency(rel, [1], orders=(1, 13))
