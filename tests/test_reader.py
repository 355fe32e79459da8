"""zkfp.safetensors_folder: the one reader of a folder of safetensors files (checkpoints, releases).

It reads with safetensors' numpy API (bfloat16 from ml_dtypes), never imports torch, gives each
tensor in its stored dtype (so writers can keep bf16) or as float32 exactly, reads rows and
runs of elements without the rest of the tensor, and finds tensors through an explicit weight
map, `model.safetensors.index.json`, or the files' own headers.
"""

from __future__ import annotations

import json
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from zkfp.checkpoint import Checkpoint
from zkfp.errors import CheckpointError, ReleaseError
from zkfp.safetensors_folder import INDEX_FILE, SafetensorsFolder

_G = torch.Generator().manual_seed(0)


def _tensors():
    return {"w.bf16": torch.randn(6, 5, generator=_G).bfloat16(), "w.f16": torch.randn(4, 3, generator=_G).half(),
            "w.f32": torch.randn(3, 4, 5, generator=_G), "w.f64": torch.randn(7, generator=_G).double() + 1e-12,
            "ids": torch.arange(6, dtype=torch.int64)}


@pytest.fixture
def folder(tmp_path):
    """One file with one tensor of each dtype; and the torch originals."""
    tensors = _tensors()
    save_file(tensors, tmp_path / "model.safetensors")
    return tmp_path, tensors


def test_float_dtypes_widen_to_float32_exactly_and_bf16_is_kept_raw(folder):
    path, src = folder
    f = SafetensorsFolder(path)
    for name in ("w.bf16", "w.f16", "w.f32"):
        got = f.float32(name)
        assert got.dtype == np.float32 and np.array_equal(got, src[name].float().numpy()), name
    assert np.array_equal(f.float32("w.f64"), src["w.f64"].numpy().astype(np.float32))  # rounded, as documented
    raw = f.raw("w.bf16")
    assert raw.dtype == ml_dtypes.bfloat16 and f.dtype("w.bf16") == "BF16"
    assert np.array_equal(raw.view(np.int16), src["w.bf16"].view(torch.int16).numpy())  # the very bits


def test_torch_view_keeps_the_stored_dtype(folder):
    path, src = folder
    (path / "config.json").write_text("{}")
    ckpt = Checkpoint(path)
    for name, t in src.items():
        got = ckpt.get(name)
        assert got.dtype == t.dtype and torch.equal(got, t), name
    assert torch.equal(ckpt.get_rows("w.bf16", [4, 0, 4]), src["w.bf16"][[4, 0, 4]])
    assert ckpt.get("w.bf16", torch.float32).dtype == torch.float32


def test_non_float_tensors_are_refused_as_float32_naming_the_dtype(folder):
    path, _ = folder
    with pytest.raises(CheckpointError, match="tensor ids has dtype I64"):
        SafetensorsFolder(path).float32("ids")


def test_rows_and_element_runs_equal_the_whole_tensor_sliced(folder):
    path, src = folder
    f = SafetensorsFolder(path)
    assert np.array_equal(f.rows("w.bf16", [5, 1, 1]).view(np.int16), src["w.bf16"][[5, 1, 1]].view(torch.int16).numpy())
    whole = src["w.f32"].numpy().reshape(-1)
    for first in range(0, whole.size, 7):
        for count in {min(c, whole.size - first) for c in (0, 1, 19, 20, 21, whole.size)}:
            assert np.array_equal(f.flat("w.f32", first, count), whole[first:first + count]), (first, count)
    with pytest.raises(CheckpointError, match="outside tensor w.f32"):
        f.flat("w.f32", 50, 20)
    with pytest.raises(CheckpointError, match="row 6 is outside tensor w.bf16"):
        f.rows("w.bf16", [6])


def test_a_run_of_elements_reads_only_the_rows_that_hold_it(folder, monkeypatch):
    path, _ = folder
    f = SafetensorsFolder(path)
    asked = []
    real = f._read
    monkeypatch.setattr(f, "_read", lambda name, index: asked.append(index) or real(name, index))
    f.flat("w.f32", 20, 20)  # exactly the second of three (4, 5) slabs
    f.flat("w.f32", 38, 4)   # straddles the second and third
    assert asked == [slice(1, 2), slice(1, 3)]


def _sharded(tmp_path, tensors):
    """The tensors in two shards listed by an index."""
    names = sorted(tensors)
    weight_map = {}
    for i, part in enumerate((names[:2], names[2:])):
        shard = f"model-{i + 1:05d}-of-00002.safetensors"
        save_file({n: tensors[n] for n in part}, tmp_path / shard)
        weight_map.update({n: shard for n in part})
    (tmp_path / INDEX_FILE).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return weight_map


def test_an_index_the_headers_and_an_explicit_map_find_the_same_tensors(tmp_path):
    src = _tensors()
    weight_map = _sharded(tmp_path, src)
    by_index = SafetensorsFolder(tmp_path)
    (tmp_path / INDEX_FILE).unlink()
    by_headers = SafetensorsFolder(tmp_path)
    by_map = SafetensorsFolder(tmp_path, weight_map, error=ReleaseError)
    for f in (by_index, by_headers, by_map):
        assert sorted(f.names) == sorted(src)
        assert [p.name for p in f.files()] == sorted(set(weight_map.values()))
        for name, t in src.items():
            assert f.file_of(name) == weight_map[name]
            assert f.shape(name) == tuple(t.shape)


def test_bad_shards_are_named(tmp_path):
    weight_map = _sharded(tmp_path, _tensors())
    second = tmp_path / "model-00002-of-00002.safetensors"
    data = second.read_bytes()
    second.write_bytes(data[: len(data) - 9])
    with pytest.raises(CheckpointError, match="corrupted or truncated safetensors file model-00002-of-00002"):
        SafetensorsFolder(tmp_path)
    second.unlink()
    with pytest.raises(CheckpointError, match="shard listed in model.safetensors.index.json is missing: "
                                              "model-00002-of-00002.safetensors"):
        SafetensorsFolder(tmp_path)
    with pytest.raises(ReleaseError, match="file missing from .*: model-00002-of-00002.safetensors"):
        SafetensorsFolder(tmp_path, weight_map, error=ReleaseError).raw("w.f64")
    escaping = dict(weight_map, **{"w.f64": "../elsewhere.safetensors"})
    (tmp_path / INDEX_FILE).write_text(json.dumps({"weight_map": escaping}))
    with pytest.raises(CheckpointError, match="not a plain name: '../elsewhere.safetensors'"):
        SafetensorsFolder(tmp_path)


def test_the_reader_and_the_circuit_inputs_import_no_torch():
    code = ("import sys; import zkfp.safetensors_folder, circuits.inputs; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
