"""Write one safetensors file whose largest tensor is produced a slice at a time.

A release block's Θ is (N+1) down-projection-sized fp32 matrices: 3.7 GB per block for the
Llama-2-7B shape at N = 28. safetensors' `save_file` needs every tensor in memory at once, so
conversion would peak at a whole Θ plus the block. This writer takes a `Streamed` tensor (its
shape, dtype, and a function yielding its slices along dim 0) and writes the same file format
— 8-byte little-endian header length, the JSON header padded with spaces to a multiple of 8,
then every tensor's bytes back to back — holding one slice at a time. Files are read back by
safetensors itself (zkfp.safetensors_folder), which checks the header against the file.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

import torch

DTYPE_NAMES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
               torch.int64: "I64", torch.int32: "I32"}


@dataclass(frozen=True)
class Streamed:
    """A tensor written slice by slice: `slices()` yields tensors of `dtype` whose concatenation
    along dim 0 has `shape`."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    slices: Callable[[], Iterable[torch.Tensor]]


def _nbytes(shape: tuple[int, ...], dtype: torch.dtype) -> int:
    return math.prod(shape) * dtype.itemsize


def save_streamed(tensors: Mapping[str, "torch.Tensor | Streamed"], path: str | os.PathLike) -> None:
    """Write `tensors` (plain tensors and Streamed ones) as a safetensors file at `path`."""
    specs = {name: (tuple(t.shape), t.dtype) for name, t in tensors.items()}
    # Largest element first, then by name (as safetensors orders them): every tensor starts at a
    # multiple of its element size, since the header is padded to a multiple of 8.
    order = sorted(specs, key=lambda n: (-specs[n][1].itemsize, n))
    header, offset = {}, 0
    for name in order:
        shape, dtype = specs[name]
        size = _nbytes(shape, dtype)
        header[name] = {"dtype": DTYPE_NAMES[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(text)))
        handle.write(text)
        for name in order:
            t = tensors[name]
            parts = t.slices() if isinstance(t, Streamed) else (t,)
            written = 0
            for part in parts:
                if part.dtype != specs[name][1] or tuple(part.shape[1:]) != specs[name][0][1:]:
                    raise ValueError(f"slice of {name} has dtype {part.dtype} and shape {tuple(part.shape)}, "
                                     f"not {specs[name][1]} rows of {specs[name][0][1:]}")
                written += _write(handle, part)
            if written != _nbytes(*specs[name]):
                raise ValueError(f"{name}: slices hold {written} bytes, its shape {specs[name][0]} needs "
                                 f"{_nbytes(*specs[name])}")


def _write(handle, tensor: torch.Tensor) -> int:
    flat = tensor.detach().contiguous().reshape(-1)
    raw = flat.view(torch.uint8) if flat.numel() else flat.new_empty(0, dtype=torch.uint8)
    handle.write(memoryview(raw.numpy()))
    return raw.numel()
