"""Circuit inputs from half-precision releases.

A Taylor release keeps its source's dtype for the tensors it stores in clear (attention weights,
norms, embeddings, exact MLP rows), so a bf16 or fp16 checkpoint gives a release with BF16 or F16
tensors. The circuit's reader (`circuits.inputs.Release`, numpy only) must read them as float32,
exactly, and refuse any dtype it cannot read, naming the tensor and the dtype.
"""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

ST_DTYPE = {"bf16": "BF16", "f16": "F16"}


@pytest.fixture(scope="module")
def releases(tiny_models, tmp_path_factory):
    """{"bf16" | "f16": (source checkpoint, its Taylor release)}, from one tiny trained Llama."""
    import torch
    from transformers import AutoModelForCausalLM

    import taylor

    src = tiny_models("llama", steps=5)
    root = tmp_path_factory.mktemp("half-releases")
    out = {}
    for tag, dtype in (("bf16", torch.bfloat16), ("f16", torch.float16)):
        ckpt = root / tag
        AutoModelForCausalLM.from_pretrained(src, dtype=dtype).save_pretrained(ckpt, safe_serialization=True)
        for side in src.iterdir():
            if side.name.startswith("tokenizer") or side.name in ("special_tokens_map.json", "vocab.json",
                                                                  "merges.txt"):
                shutil.copyfile(side, ckpt / side.name)
        out[tag] = (ckpt, taylor.protect(ckpt, root / f"{tag}-release"))
    return out


def _source(ckpt):
    from safetensors.torch import load_file

    tensors = {}
    for f in sorted(ckpt.glob("*.safetensors")):
        tensors.update(load_file(f))
    return tensors


def _circuit_inputs(rel):
    from circuits.inputs import release_inputs, shape_of
    from fingerprint import spec

    shape = shape_of(rel, spec.K_TOKENS, spec.M_DIM)
    tokens = spec.select_tokens(rel.vocab(), shape.k)
    return shape, tokens, release_inputs(rel, shape, tokens)


@pytest.mark.parametrize("tag", ["bf16", "f16"])
def test_half_precision_release_gives_every_circuit_input_as_float32(releases, tag):
    from circuits.inputs import Release

    _, rel_dir = releases[tag]
    manifest = json.loads((rel_dir / "manifest.json").read_text())
    assert manifest["dtypes"]["source_weights"] == [ST_DTYPE[tag]]  # the release kept the source's dtype
    rel = Release(rel_dir)
    shape, _, inputs = _circuit_inputs(rel)
    specs = shape.input_specs()
    assert len(inputs) == len(specs)
    for (name, want), arr in zip(specs, inputs):
        assert arr.dtype == np.float32, name
        assert arr.shape == tuple(want), name
        assert np.isfinite(arr).all(), name


@pytest.mark.parametrize("tag", ["bf16", "f16"])
def test_clear_tensors_equal_the_source_weights_exactly(releases, tag):
    from circuits.inputs import Release

    ckpt, rel_dir = releases[tag]
    src = _source(ckpt)
    rel = Release(rel_dir)
    fam = rel.arch.family
    exact_f32 = lambda name: src[name].float().numpy()  # noqa: E731 - bf16/f16 -> f32 is exact

    embed = rel.key(fam.embed)
    assert rel.tensors[embed]["dtype"] == ST_DTYPE[tag]
    assert np.array_equal(rel.get(embed), exact_f32(embed))
    _, tokens, inputs = _circuit_inputs(rel)
    assert np.array_equal(inputs[0], exact_f32(embed)[tokens])

    i = rel.arch.dims.layers - 1
    for role in (fam.q, fam.k, fam.v, fam.o, fam.attn_norm, fam.mlp_norm):
        name = rel.key(role + ".weight", i)
        assert np.array_equal(rel.get(name), exact_f32(name)), name

    expanded = np.asarray(rel.layers_info[i]["expanded"])
    exact = np.setdiff1d(np.arange(rel.arch.dims.intermediate), expanded)
    gate, up, down = (exact_f32(rel.key(r + ".weight", i)) for r in (fam.gate, fam.up, fam.down))
    assert np.array_equal(rel.mlp(i, "in_weight"), gate[expanded])
    assert np.array_equal(rel.mlp(i, "up_weight"), up[expanded])
    assert np.array_equal(rel.mlp(i, "exact_in_weight"), gate[exact])
    assert np.array_equal(rel.mlp(i, "exact_up_weight"), up[exact])
    assert np.array_equal(rel.mlp(i, "exact_down_weight"), down[:, exact])


def _rewrite(rel_dir, dst, name, convert):
    """A copy of the release whose tensor `name` is replaced by convert(tensor) in its file."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(rel_dir, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    path = dst / manifest["tensors"][name]["file"]
    tensors = load_file(path)
    tensors[name] = convert(tensors[name])
    save_file(tensors, path)
    return dst


def _last_q(rel_dir):
    from circuits.inputs import Release

    rel = Release(rel_dir)
    return rel.key(rel.arch.family.q + ".weight", rel.arch.dims.layers - 1)


@pytest.mark.parametrize("dtype, st_name", [("int32", "I32"), ("int64", "I64"), ("uint8", "U8")])
def test_a_non_float_tensor_is_refused_with_its_dtype_named(releases, tmp_path, dtype, st_name):
    import torch

    from circuits.inputs import Release
    from zkfp.errors import ReleaseError

    _, rel_dir = releases["bf16"]
    name = _last_q(rel_dir)
    bad = _rewrite(rel_dir, tmp_path / "rel", name, lambda t: (t * 100).to(getattr(torch, dtype)))
    rel = Release(bad)
    with pytest.raises(ReleaseError, match=re.escape(f"tensor {name} has dtype {st_name}")):
        rel.get(name)
    with pytest.raises(ReleaseError, match=f"dtype {st_name}"):
        _circuit_inputs(rel)


def test_an_f64_tensor_is_read_rounded_to_float32(releases, tmp_path):
    from circuits.inputs import Release

    _, rel_dir = releases["bf16"]
    name = _last_q(rel_dir)
    wide = {}

    def to_f64(t):
        wide["value"] = t.double() + 1e-12  # not representable in float32
        return wide["value"]

    got = Release(_rewrite(rel_dir, tmp_path / "rel", name, to_f64)).get(name)
    assert got.dtype == np.float32
    assert np.array_equal(got, wide["value"].numpy().astype(np.float32))


def test_a_truncated_release_file_is_refused(releases, tmp_path):
    from circuits.inputs import Release, read_header
    from zkfp.errors import ReleaseError

    _, rel_dir = releases["bf16"]
    dst = shutil.copytree(rel_dir, tmp_path / "rel")
    rel = Release(dst)
    embed = rel.key(rel.arch.family.embed)
    path = dst / rel.tensors[embed]["file"]
    _, data_start = read_header(path)
    path.write_bytes(path.read_bytes()[:data_start + 2])  # every tensor's bytes cut short
    with pytest.raises(ReleaseError, match="truncated"):
        Release(dst).get(embed)
