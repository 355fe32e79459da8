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


def test_circuit_matches_fingerprint_extract(tmp_path):
    """The circuit's float graph computes exactly fingerprint.extract's v."""
    import numpy as np
    import torch

    import taylor
    from circuits.inputs import Release, release_inputs, shape_of
    from circuits.model import float_fingerprint
    from circuits.projection import load_projection
    from fingerprint import spec
    from fingerprint.extract import extract
    from zkfp.zoo import embedded

    rel_dir = taylor.protect(embedded.path(), tmp_path / "rel")
    rel = Release(rel_dir)
    shape = shape_of(rel, spec.K_TOKENS, spec.N_LAYERS, spec.M_DIM)
    inputs = release_inputs(rel, shape, spec.select_tokens(rel.vocab(), shape.k))
    P = load_projection(3 * len(shape.layers) * shape.k ** 2, shape.m)
    v = float_fingerprint(shape, torch.from_numpy(P), inputs)
    ref = np.array(extract(rel_dir).v)
    assert float(v @ ref / np.linalg.norm(v) / np.linalg.norm(ref)) > 0.9999
    assert shape.estimate_logrows() <= 18


def test_onnx_graph_computes_the_torch_reference(tmp_path):
    """circuits.graph (torch-free, what ezkl compiles) and circuits.model (torch float reference)
    are the same function."""
    import numpy as np
    from onnx.reference import ReferenceEvaluator

    import taylor
    from circuits.graph import build_onnx
    from circuits.inputs import Release, release_inputs, shape_of
    from circuits.model import float_outputs
    from fingerprint import spec
    from zkfp.zoo import embedded

    rel = Release(taylor.protect(embedded.path(), tmp_path / "rel"))
    shape = shape_of(rel, spec.K_TOKENS, spec.N_LAYERS, spec.M_DIM)
    inputs = release_inputs(rel, shape, spec.select_tokens(rel.vocab(), shape.k))
    feeds = {name: np.asarray(a, np.float32) for (name, _), a in zip(shape.input_specs(), inputs)}
    got = ReferenceEvaluator(build_onnx(shape)).run(None, feeds)[0]
    want = float_outputs(shape, inputs).numpy()
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


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
    shape = shape_of(rel, spec.K_TOKENS, spec.N_LAYERS, spec.M_DIM)
    with pytest.raises(ReleaseError, match="l1.q holds non-finite values"):
        release_inputs(rel, shape, spec.select_tokens(rel.vocab(), shape.k))


def test_too_large_model_is_refused_before_any_work():
    from circuits.pipeline import check_fits
    from circuits.spec import CircuitShape, LayerShape
    from zkfp.errors import ZkfpError

    big = CircuitShape(k=16, hidden=4096, heads=32, kv_heads=8, head_dim=128, intermediate=14336,
                       layers=(LayerShape(10000, 4336),) * 2, m=64)
    with pytest.raises(ZkfpError, match=r"up to 2\^19 rows. A model of this architecture fits up to hidden size 1\d\d "):
        check_fits(big, limit=19)


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
