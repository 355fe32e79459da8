"""Fast checks of the circuit definition, the verifier's import hygiene and the repo's text rules."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def test_verifier_imports_neither_torch_nor_transformers():
    code = ("import sys, verifier, verifier.verify, verifier.cli, circuits.inputs, circuits.finish, "
            "circuits.graph, circuits.pipeline, circuits.golden, "
            "circuits.projection, circuits.srs, fingerprint.render, fingerprint.spec; "
            "bad=[m for m in ('torch','transformers') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stdout + r.stderr


def test_no_module_level_torch_in_verifier():
    pat = re.compile(r"^(import torch|from torch|import transformers|from transformers)", re.M)
    for p in (REPO / "verifier").glob("*.py"):
        assert not pat.search(p.read_text()), p


def test_nothing_downloads_an_srs():
    hits = []
    for p in REPO.rglob("*.py"):
        if ".git" in p.parts or p.name == "test_circuits.py":
            continue
        if "get_srs" + "(" in p.read_text(errors="ignore"):  # split so this check does not flag itself
            hits.append(str(p))
    assert not hits, hits


@pytest.fixture(scope="module")
def embedded_inputs(tmp_path_factory):
    import taylor
    from circuits.inputs import Release, release_inputs, shape_of
    from fingerprint import spec
    from zkfp.zoo import embedded

    rel_dir = taylor.protect(embedded.path(), tmp_path_factory.mktemp("rel") / "rel")
    rel = Release(rel_dir)
    shape = shape_of(rel, spec.K_TOKENS, spec.M_DIM)
    return rel_dir, shape, release_inputs(rel, shape, spec.select_tokens(rel.vocab(), shape.k))


def test_circuit_matches_fingerprint_extract(embedded_inputs):
    """The terms graph (onnx's reference evaluator) and the encoder's math give fingerprint.extract's v."""
    import numpy as np

    from circuits.finish import v_from_terms
    from circuits.graph import reference_terms
    from circuits.projection import load_projection
    from fingerprint.extract import extract

    rel_dir, shape, inputs = embedded_inputs
    v = v_from_terms(reference_terms(shape, inputs), shape, load_projection(shape.k, shape.m))
    ref = np.array(extract(rel_dir).v)
    assert float(v @ ref / np.linalg.norm(v) / np.linalg.norm(ref)) > 0.9999


def test_encoder_graph_computes_the_spec_encoder(embedded_inputs):
    """The encoder circuit's graph, fed the terms and honest 1/σ, gives y with zscore(y) = v and
    every check 1; a wrong 1/σ shows in its check."""
    import numpy as np
    from onnx.reference import ReferenceEvaluator

    from circuits.finish import v_from_public, v_from_terms
    from circuits.graph import build_encoder_onnx, reference_terms
    from circuits.plan import Part
    from circuits.projection import load_projection
    from fingerprint.spec import off_diagonal

    _, shape, inputs = embedded_inputs
    terms = reference_terms(shape, inputs)
    c = terms.reshape(shape.n_terms(), -1)[:, off_diagonal(shape.k)] / 2.0 ** shape.term_shift
    c = c - c.mean(axis=1, keepdims=True)
    inv = 1 / np.sqrt((c * c).sum(axis=1))
    run = ReferenceEvaluator(build_encoder_onnx(Part("encoder", shape, (tuple(range(shape.n_terms())),))))

    def encode(u):
        return v_from_public(run.run(None, {"partial0": terms.astype(np.float32),
                                            "root_inv_sigma": u.astype(np.float32)})[0], shape)
    v, checks = encode(np.sqrt(inv))
    want = v_from_terms(terms, shape, load_projection(shape.k, shape.m))
    assert np.abs(checks - 1).max() < 1e-4
    assert np.abs(v - want).max() < 1e-3
    inv[2] *= 1.01
    _, checks = encode(np.sqrt(inv))
    assert abs(checks[2] - 1.0201) < 1e-3
    u = np.sqrt(inv)
    u[4] = -u[4]
    assert np.allclose(encode(u)[0], encode(np.sqrt(inv))[0]), "no sign of a term to flip: the factor is u²"


def _per_layer(terms, shape):
    """Flat per-head terms → per layer, (heads, 2, k²) and the MLP term (k²)."""
    kk, H = shape.k ** 2, shape.heads
    rows = terms.reshape(len(shape.layers), (2 * H + 1) * kk)
    return rows[:, :2 * H * kk].reshape(-1, H, 2, kk), rows[:, 2 * H * kk:]


def test_per_head_terms_graph_gives_the_fingerprints_heads_and_sums_to_the_spec_terms(embedded_inputs):
    """The planned fp/4 terms graph (per-head outputs, docs/fp4-plan.md D2) computes the very heads
    fingerprint.extract records, in its head order, and they add up to today's summed terms."""
    import numpy as np

    from circuits.graph import reference_terms
    from fingerprint.extract import extract
    from fingerprint.spec import off_diagonal

    rel_dir, shape, inputs = embedded_inputs
    per_head = reference_terms(shape, inputs, per_head=True)
    heads, mlp = _per_layer(per_head, shape)
    summed = reference_terms(shape, inputs).reshape(len(shape.layers), 3, -1)
    assert np.allclose(heads.sum(axis=1), summed[:, :2], rtol=1e-4, atol=1e-5 * np.abs(summed).max())
    assert np.array_equal(mlp, summed[:, 2])

    off = off_diagonal(shape.k)
    z = heads[..., off]
    z = (z - z.mean(-1, keepdims=True)) / z.std(-1, keepdims=True)
    mine = z.reshape(len(shape.layers), shape.heads, -1)
    ref = extract(rel_dir).layer_heads()
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
    cos = np.einsum("lhn,lgn->lhg", unit(mine), unit(ref))  # every head against every recorded head of its layer
    same = np.eye(shape.heads, dtype=bool)
    assert cos[:, same].min() > 0.9999, cos
    assert cos[:, ~same].max() < 0.99, "heads alike: the order check would prove nothing"


def test_units_encoder_graph_projects_each_head_and_each_mlp(embedded_inputs):
    """The planned fp/4 encoder, fed one layer's per-head terms and honest 1/σ: zscore(y) of each
    head is zscore(P_head · that head's vector) and of the MLP zscore(P_mlp · its z-scored term),
    every check 1; the layer split into two encoders gives the same values; a wrong 1/σ shows."""
    import numpy as np
    from onnx.reference import ReferenceEvaluator

    from circuits.finish import zscore
    from circuits.graph import build_units_encoder_onnx, reference_terms
    from fingerprint.spec import off_diagonal

    _, shape, inputs = embedded_inputs
    H, off = shape.heads, off_diagonal(shape.k)
    n = len(off)
    layer = reference_terms(shape, inputs, per_head=True).reshape(len(shape.layers), 2 * H + 1, -1)[1]
    c = layer[:, off] / 2.0 ** shape.term_shift
    c = c - c.mean(axis=1, keepdims=True)
    u = (1 / np.sqrt((c * c).sum(axis=1))) ** 0.5
    g = np.random.default_rng(0)
    P_head, P_mlp = g.standard_normal((256, 2 * n)), g.standard_normal((64, n))

    def run(units, terms, roots):
        model = build_units_encoder_onnx(shape, units, P_head, P_mlp)
        out = ReferenceEvaluator(model).run(None, {"partial0": terms.reshape(-1).astype(np.float32),
                                                   "root_inv_sigma": roots.astype(np.float32)})[0]
        return np.asarray(out, dtype=np.float64)

    out = run(("head",) * H + ("mlp",), layer, u)
    y_heads, y_mlp, checks = out[:256 * H].reshape(H, 256), out[256 * H:256 * H + 64], out[256 * H + 64:]
    assert len(checks) == 2 * H + 1 and np.abs(checks - 1).max() < 1e-4
    z = np.stack([zscore(t) for t in layer[:, off]])
    for h in range(H):
        assert np.abs(zscore(y_heads[h]) - zscore(P_head @ z[2 * h:2 * h + 2].reshape(-1))).max() < 1e-3
    assert np.abs(zscore(y_mlp) - zscore(P_mlp @ z[-1])).max() < 1e-3

    first = run(("head", "head"), layer[:4], u[:4])
    rest = run(("head", "head", "mlp"), layer[4:], u[4:])
    assert np.allclose(first[:512], out[:512], atol=1e-4) and np.allclose(rest[:512], out[512:1024], atol=1e-4)
    assert np.allclose(rest[512:576], y_mlp, atol=1e-4)

    wrong = u.copy()
    wrong[3] *= 1.01  # z_3 = c·u² grows by 1.01², its check z·z by 1.01⁴
    assert abs(run(("head",) * H + ("mlp",), layer, wrong)[256 * H + 64 + 3] - 1.01 ** 4) < 1e-3
    with pytest.raises(ValueError, match="'head' or 'mlp'"):
        build_units_encoder_onnx(shape, ("heads",), P_head, P_mlp)


def test_bundle_shapes_that_depart_from_the_spec_are_named():
    from dataclasses import replace

    from circuits.spec import CircuitShape, LayerShape

    a = CircuitShape.for_model(hidden=64, heads=4, kv_heads=2, head_dim=16, intermediate=172,
                               layers=(LayerShape(120, 52),) * 2, activation="silu")
    assert a.departures_from_spec() == []
    assert replace(a, k=8).departures_from_spec() == ["k (selected tokens) = 8 (the spec's is 16)"]
    assert replace(a, term_shift=10).departures_from_spec() == ["term_shift = 10 (the spec's is 24)"]
    assert replace(a, layers=a.layers * 2).departures_from_spec() == []  # every layer, however many
    assert "every layer" in replace(a, layers=()).departures_from_spec()[0]


def test_terms_outside_the_encoders_window_are_named(embedded_inputs):
    from circuits.finish import BN254_R, term_scale_problem
    from circuits.graph import reference_terms

    def felts(x):  # the terms circuit's output: round(M·2^60) as field elements
        ints = [int(round(float(v) * 2.0 ** 60)) for v in x]
        return [(i % BN254_R).to_bytes(32, "little").hex() for i in ints]

    _, shape, inputs = embedded_inputs
    terms = reference_terms(shape, inputs)
    assert term_scale_problem(felts(terms), shape) is None
    assert "leave the window" in term_scale_problem(felts(terms * 2.0 ** 20), shape)
    assert "leave the window" in term_scale_problem(felts(terms * 2.0 ** -18), shape)


def test_numpy_quantisation_matches_ezkl():
    import ezkl
    import numpy as np

    from verifier.commit import quantise

    rng = np.random.default_rng(1)
    xs = np.concatenate([rng.normal(scale=0.1, size=500), np.array([0.0, 0.5, -0.5, 1.5, -1.5, 2.5, -2.5]) / 1024,
                         np.array([0.4999, -0.4999, 1e-9, -1e-9])]).astype(np.float32).astype(np.float64)
    assert quantise(xs, 10) == [ezkl.float_to_felt(float(x), 10) for x in xs]


def test_field_elements_decode_to_signed_integers():
    from circuits.finish import felts_to_ints
    from verifier.commit import quantise

    assert felts_to_ints(quantise([0.0, 1.0, -1.0, -3.5], 10)) == [0, 1024, -1024, -3584]


def test_non_finite_weights_are_refused_with_the_tensor_named(tmp_path):
    import numpy as np
    from safetensors.numpy import load_file, save_file

    import taylor
    from circuits.inputs import Release, release_inputs, shape_of
    from fingerprint import spec
    from zkfp.errors import ReleaseError
    from zkfp.zoo import embedded

    rel_dir = taylor.protect(embedded.path(), tmp_path / "rel")
    last = sorted(rel_dir.glob("layer-*.safetensors"))[-1]
    tensors = load_file(last)
    name = next(n for n in tensors if n.endswith("q_proj.weight"))
    tensors[name][0, 0] = np.nan
    save_file(tensors, last)
    rel = Release(rel_dir)
    shape = shape_of(rel, spec.K_TOKENS, spec.M_DIM)
    with pytest.raises(ReleaseError, match="l1.q holds non-finite values"):
        release_inputs(rel, shape, spec.select_tokens(rel.vocab(), shape.k))


def test_an_8b_model_is_cut_into_chunks_that_fit_and_a_small_machine_is_refused():
    """Two layers of Llama-3-8B's shape at 2^18 rows per chunk (terms rows by the shape's estimate here;
    benchmarks/chunked_proofs.py lays them out with ezkl): every chunk fits; a machine that
    cannot hold one 2^18 circuit is refused before any work, with the memory it would need."""
    from circuits.pipeline import check_fits
    from circuits.plan import make_plan
    from circuits.spec import CircuitShape, LayerShape
    from zkfp.errors import ZkfpError

    big = CircuitShape.for_model(hidden=4096, heads=32, kv_heads=8, head_dim=128, intermediate=14336,
                                 layers=(LayerShape(10000, 4336),) * 2, activation="silu")
    plan = make_plan(big, 18, fits=lambda part, rows: part.kind != "terms" or part.shape.estimate_rows() <= rows)
    assert len(plan.terms_chunks) > 1000 and all(c.part.shape.estimate_rows() < 2 ** 18 for c in plan.terms_chunks)
    assert any(c.part.kind == "sum" for c in plan.chunks), "more chunks than the encoder's fan-in"
    assert len(plan.parts) < 10, "setup is paid per circuit shape, not per chunk"
    with pytest.raises(ZkfpError, match=r"2\^18 rows, about 7.9 GB each to prove .* up to 2\^17 rows: prove it "
                                        r"in smaller chunks \(zkfp prove --chunk-rows 130,048\)"):
        check_fits(18, limit=17)


def test_a_smaller_row_budget_per_chunk_proves_at_a_smaller_logrows(embedded_inputs):
    """A proof's memory follows 2^logrows, so `--chunk-rows` lowers the plan's logrows to the least
    that holds the budget (never below the decomposition's 2^16); a budget beyond the shape's own
    circuit is refused."""
    from circuits.pipeline import ROW_RESERVE, logrows_for, plan_logrows

    _, shape, _ = embedded_inputs
    assert logrows_for(shape) == plan_logrows(shape) == 17
    assert plan_logrows(shape, (1 << 16) - ROW_RESERVE) == 16 and plan_logrows(shape, (1 << 16) - ROW_RESERVE + 1) == 17
    assert plan_logrows(shape, 5_000) == 16 and plan_logrows(shape, (1 << 17) - ROW_RESERVE) == 17
    for impossible in (0, (1 << 17) - ROW_RESERVE + 1):
        with pytest.raises(ValueError, match="must be between 1 and 130,048 for this model"):
            plan_logrows(shape, impossible)


def test_circuit_size_limit_follows_the_machines_memory():
    from circuits.pipeline import max_logrows

    assert max_logrows(24 * 10**9) == 19   # this 24 GB machine: 2^19 rows proved in 14.5 GB
    assert max_logrows(128 * 2**30) == 21


def test_shape_key_is_stable_and_shape_sensitive():
    from circuits.spec import CircuitShape, LayerShape

    a = CircuitShape(k=16, hidden=64, heads=4, kv_heads=2, head_dim=16, intermediate=172,
                     layers=(LayerShape(120, 52),) * 2, m=64)
    b = CircuitShape.from_json(a.to_json())
    assert a.key() == b.key()
    c = CircuitShape(k=16, hidden=64, heads=4, kv_heads=2, head_dim=16, intermediate=172,
                     layers=(LayerShape(121, 51),) * 2, m=64)
    assert c.key() != a.key()


def test_lsq_weights_rebuild_down_projection():
    import numpy as np

    from circuits.inputs import lsq_weights
    from taylor.jets import activation_jet

    rng = np.random.default_rng(0)
    a = rng.uniform(-3, 3, size=50)
    w_down = rng.normal(size=(8, 50))
    c = activation_jet("silu", a, 4)
    theta = c[:, None, :] * w_down[None]
    w = lsq_weights("silu", a, (1, 2))
    rebuilt = (theta[[1, 2]] * w[:, None, :]).sum(0)
    assert np.allclose(rebuilt, w_down, atol=1e-5)


# -- plain-MLP LayerNorm families (GPT-2, GPT-NeoX) -------------------------------------------

PLAIN_FAMILIES = ("gpt2", "gpt_neox")


@pytest.fixture(scope="module")
def plain_releases(tiny_models, tmp_path_factory):
    """family -> (release folder, circuit shape, the whole circuit inputs by name, source
    checkpoint): tiny GPT-2
    (Conv1D weights, fused [q|k|v], tanh-GELU) and GPT-NeoX (per-head fused qkv, erf-GELU),
    trained 5 steps (their MLP biases are then non-zero), Taylor-protected with the defaults."""
    import taylor
    from circuits.inputs import Release, release_inputs, shape_of
    from fingerprint import spec

    out = {}
    for family in PLAIN_FAMILIES:
        src = tiny_models(family, seed=0, steps=5)
        rel_dir = taylor.protect(src, tmp_path_factory.mktemp(family) / "rel")
        rel = Release(rel_dir)
        shape = shape_of(rel, spec.K_TOKENS, spec.M_DIM)
        inputs = release_inputs(rel, shape, spec.select_tokens(rel.vocab(), shape.k))
        out[family] = rel_dir, shape, {name: a for (name, _), a in zip(shape.input_specs(), inputs)}, src
    return out


def _cosine(a, b) -> float:
    import numpy as np

    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def _v(shape, terms):
    from circuits.finish import v_from_terms
    from circuits.projection import load_projection

    return v_from_terms(terms, shape, load_projection(shape.k, shape.m))


@pytest.mark.parametrize("family", PLAIN_FAMILIES)
def test_plain_mlp_circuit_matches_fingerprint_extract(plain_releases, family):
    """A LayerNorm family's circuit reads centred token rows, q/k/v split from the fused
    projection, and no gate (M_f = X·W_upᵀ·W_downᵀ·Xᵀ, the expanded neurons' W_down rebuilt at
    the points recovered from the orders): its float reference gives fingerprint.extract's v."""
    import numpy as np

    from circuits.graph import reference_terms
    from fingerprint.extract import extract

    rel_dir, shape, tensors, _ = plain_releases[family]
    assert shape.mlp == "plain" and not any("gate" in n for n in tensors)
    assert np.abs(tensors["tokens"].mean(axis=1)).max() < 1e-6, "token rows centred (X·C)"
    v = _v(shape, reference_terms(shape, [tensors[n] for n, _ in shape.input_specs()]))
    assert _cosine(v, np.array(extract(rel_dir).v)) > 0.999999


@pytest.mark.parametrize("family", PLAIN_FAMILIES)
def test_plain_mlp_weights_are_taken_at_the_anchor_plus_the_folded_bias(plain_releases, family):
    """The release folds the first-layer bias b into its anchors and does not release it: the
    public per-neuron weights w_n are computed at anchor + b, b recovered from the stored orders
    to within POINT_FIT_ERROR of the source checkpoint's."""
    import numpy as np
    from safetensors.numpy import load_file

    from circuits.inputs import POINT_FIT_ERROR, Release, expansion_points, lsq_weights

    rel_dir, shape, tensors, src = plain_releases[family]
    rel = Release(rel_dir)
    fam = rel.arch.family
    source = load_file(str(src / "model.safetensors"))
    prefix = next(p for p in fam.base_prefixes if p + fam.embed in source)
    for j, i in enumerate((0, 1)):  # the fingerprint's last two blocks: all of a tiny model's
        s = np.asarray(rel.layers_info[i]["expanded"])
        b = source[prefix + fam.layer.format(i=i) + fam.up + ".bias"][s].astype(np.float64)
        anchor = rel.mlp(i, "anchor").astype(np.float64)
        assert np.abs(b).max() > 1e3 * POINT_FIT_ERROR
        assert np.abs(expansion_points(rel, i) - (anchor + b)).max() <= POINT_FIT_ERROR
        assert np.array_equal(tensors[f"l{j}.lsq_s"], lsq_weights(rel.activation, expansion_points(rel, i)))


@pytest.mark.parametrize("family", PLAIN_FAMILIES)
def test_plain_mlp_chunks_give_the_same_fingerprint(plain_releases, family):
    """Cut into attention and neuron-block chunks (head blocks of q/k/v/o, neuron blocks of
    up/coeffs/lsq/down), the partial terms add up to the fingerprint extract computes."""
    import numpy as np
    from test_chunks import _by_weights, _chunk_terms

    from circuits.plan import make_plan
    from fingerprint.extract import extract

    rel_dir, shape, tensors, _ = plain_releases[family]
    plan = make_plan(shape, 17, 3_000, fits=_by_weights)
    assert len(plan.terms_chunks) > 4
    v = _v(shape, _chunk_terms(plan, tensors).reshape(-1))
    assert _cosine(v, np.array(extract(rel_dir).v)) > 0.999999


def test_plain_mlp_shapes_have_their_own_key_and_gated_keys_are_unchanged():
    from dataclasses import replace

    from circuits.spec import CircuitShape, LayerShape

    gated = CircuitShape.for_model(hidden=64, heads=4, kv_heads=4, head_dim=16, intermediate=256,
                                   layers=(LayerShape(179, 77),) * 2, activation="gelu_tanh")
    plain = replace(gated, mlp="plain")
    assert "mlp" not in gated.to_json(), "shapes from before plain MLPs keep their keys"
    assert CircuitShape.from_json(plain.to_json()) == plain and plain.key() != gated.key()
    assert plain.departures_from_spec() == []
    assert [n for n, _ in plain.input_specs() if n.startswith("l0.") and n.endswith(("_s", "_f"))] == \
        ["l0.up_s", "l0.coeffs_s", "l0.lsq_s", "l0.up_f", "l0.down_f"]
    with pytest.raises(ValueError, match="mlp must be"):
        replace(gated, mlp="moe")


def test_plain_mlp_release_is_consistent_and_an_order_from_another_model_is_refused(plain_releases, tiny_models,
                                                                                    tmp_path):
    """verify --release's Taylor check on a GPT-NeoX release (bias folded, not released): honest
    orders pass at float32 noise; one order of the last block taken from another model is refused."""
    import shutil

    from safetensors.numpy import load_file, save_file

    import taylor
    from circuits.consistency import RTOL, check_taylor_consistency
    from circuits.inputs import Release
    from zkfp.errors import ReleaseError

    rel_dir = plain_releases["gpt_neox"][0]
    report = check_taylor_consistency(Release(rel_dir), [0, 1])
    assert max(r["coeffs"] for r in report.values()) < RTOL / 2
    other = taylor.protect(tiny_models("gpt_neox", seed=1, steps=5), tmp_path / "other")
    mixed = tmp_path / "mixed"
    shutil.copytree(rel_dir, mixed)
    name, key = "layer-00001.safetensors", "taylor.layers.1.coeffs"
    mine, theirs = load_file(str(mixed / name)), load_file(str(other / name))
    mine[key][5] = theirs[key][5]
    save_file(mine, str(mixed / name))
    with pytest.raises(ReleaseError, match=r"taylor.layers.1.coeffs order \d+, neuron"):
        check_taylor_consistency(Release(mixed), [1])


def test_plain_mlp_release_check_runs_without_torch(plain_releases):
    """The verifier's release path for an erf-GELU release (GPT-NeoX): inputs, recovered points
    and the Taylor check, with torch and transformers unimportable."""
    rel_dir = plain_releases["gpt_neox"][0]
    code = ("import sys; sys.modules['torch'] = None; sys.modules['transformers'] = None\n"
            "from circuits.consistency import check_taylor_consistency\n"
            "from circuits.inputs import Release, release_inputs, shape_of\n"
            "from fingerprint import spec\n"
            f"rel = Release({str(rel_dir)!r}); shape = shape_of(rel, spec.K_TOKENS, spec.M_DIM)\n"
            "release_inputs(rel, shape, spec.select_tokens(rel.vocab(), shape.k))\n"
            "check_taylor_consistency(rel, [0, 1])\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_release_of_a_non_causal_family_is_refused(plain_releases, tmp_path):
    """A BERT config in a release manifest (taylor.protect makes none): refused by name."""
    import json
    import shutil

    from circuits.inputs import Release
    from zkfp.errors import ZkfpError
    from zkfp.zoo.tiny import tiny_config

    bad = tmp_path / "bert"
    shutil.copytree(plain_releases["gpt2"][0], bad)
    manifest = json.loads((bad / "manifest.json").read_text())
    manifest["source"]["config"] = tiny_config("bert").to_dict()
    (bad / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ZkfpError, match="unsupported architecture 'bert'"):
        Release(bad)


def test_key_cache_trims_least_recently_used_proving_keys(tmp_path, monkeypatch):
    """Proving keys beyond the bound go, least recently used first; this proof's keys and every
    verification key stay."""
    import os

    from circuits import pipeline

    monkeypatch.setenv("ZKFP_CACHE", str(tmp_path))
    folders = []
    for age, name in enumerate(["newest", "middle", "oldest"]):
        folder = tmp_path / "keys" / name
        folder.mkdir(parents=True)
        (folder / "vk.key").write_bytes(b"v")
        (folder / "pk.key").write_bytes(b"p" * 100)
        os.utime(folder, (1_000_000 - age, 1_000_000 - age))
        folders.append(folder)
    newest, middle, oldest = folders
    (tmp_path / "keys" / ".entry.partial-x").mkdir()  # a setup under way is not touched

    assert pipeline.trim_keys(250) == [oldest]
    assert pipeline.trim_keys(0, keep={middle}) == [newest]
    assert [f.name for f in folders if (f / "pk.key").exists()] == ["middle"]
    assert all((f / "vk.key").exists() for f in folders)


def test_key_cache_bound_is_read_from_the_environment(monkeypatch):
    from circuits import pipeline
    from zkfp.errors import ZkfpError

    monkeypatch.setenv("ZKFP_KEYS_MAX_GB", "1.5")
    assert pipeline.keys_max_bytes() == int(1.5 * 2**30)
    monkeypatch.setenv("ZKFP_KEYS_MAX_GB", "lots")
    with pytest.raises(ZkfpError, match="ZKFP_KEYS_MAX_GB must be a number"):
        pipeline.keys_max_bytes()


def test_a_verifiers_key_entry_keeps_no_proving_key_and_a_prover_completes_it(tmp_path, monkeypatch):
    """`vk` (the verifier's) derives the key pair but keeps only the verification key; `keys` (the
    prover's) adds the proving key to that entry, and the verification key is unchanged."""
    import ezkl
    import torch

    from circuits import pipeline
    from circuits.srs import dev_srs

    monkeypatch.setenv("ZKFP_CACHE", str(tmp_path / "cache"))

    class Double(torch.nn.Module):
        def forward(self, x):
            return x * 2

    folder = tmp_path / "double"
    folder.mkdir()
    onnx, settings = folder / "network.onnx", folder / "settings.json"
    torch.onnx.export(Double(), (torch.ones(4),), str(onnx), opset_version=17, dynamo=False)
    run_args = ezkl.PyRunArgs()
    run_args.logrows = 10  # small: a key pair in about a second
    ezkl.gen_settings(str(onnx), str(settings), py_run_args=run_args)
    ezkl.compile_circuit(str(onnx), str(folder / "model.compiled"), str(settings))
    circuit = pipeline.Circuit(part=None, folder=folder)
    srs = dev_srs(10)

    vk = pipeline.vk(circuit, srs)
    assert vk.is_file() and not (vk.parent / "pk.key").exists()
    derived = vk.read_bytes()
    keys = pipeline.keys(circuit, srs)
    assert keys.folder == vk.parent and keys.pk.is_file() and keys.vk.read_bytes() == derived
    assert [p.name for p in (tmp_path / "cache" / "keys").iterdir()] == [vk.parent.name]  # no leftovers
