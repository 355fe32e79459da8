"""taylor.shard_writer writes safetensors files with a tensor produced slice by slice, so a
conversion never holds a block's whole Θ."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from taylor.shard_writer import Streamed, save_streamed


def _tensors():
    g = torch.Generator().manual_seed(0)
    return {"w": torch.randn(3, 5, generator=g).bfloat16(), "mlp.coeffs": torch.randn(4, 3, 2, generator=g),
            "ids": torch.arange(7), "empty": torch.zeros(0, 3), "scalar": torch.tensor(3.0)}


def _streamed(t: torch.Tensor, rows: int) -> Streamed:
    return Streamed(tuple(t.shape), t.dtype, lambda: (t[i:i + rows] for i in range(0, t.shape[0], rows)))


@pytest.mark.parametrize("rows", [1, 3])
def test_a_streamed_file_reads_back_exactly_and_equals_save_file_byte_for_byte(tmp_path, rows):
    tensors = _tensors()
    save_file(tensors, tmp_path / "reference.safetensors")
    save_streamed({**tensors, "mlp.coeffs": _streamed(tensors["mlp.coeffs"], rows)}, tmp_path / "streamed.safetensors")
    back = load_file(tmp_path / "streamed.safetensors")
    assert back.keys() == tensors.keys()
    assert all(back[k].dtype == t.dtype and torch.equal(back[k], t) for k, t in tensors.items())
    # the same bytes as safetensors' own writer, so a release's hashes do not depend on which wrote it
    assert (tmp_path / "streamed.safetensors").read_bytes() == (tmp_path / "reference.safetensors").read_bytes()


def test_slices_that_do_not_fill_the_declared_shape_are_refused(tmp_path):
    t = torch.ones(4, 2)
    short = Streamed((4, 2), torch.float32, lambda: iter([t[:3]]))
    with pytest.raises(ValueError, match="slices hold 24 bytes, its shape \\(4, 2\\) needs 32"):
        save_streamed({"x": short}, tmp_path / "a.safetensors")
    wrong = Streamed((4, 2), torch.float32, lambda: iter([t.double()]))
    with pytest.raises(ValueError, match="slice of x has dtype torch.float64"):
        save_streamed({"x": wrong}, tmp_path / "b.safetensors")
