"""Lazy, pickle-free reading of a local transformers checkpoint, as torch tensors.

A checkpoint is a folder with `config.json` and safetensors weights, either one
`model.safetensors` or shards listed in `model.safetensors.index.json`. Only the tensors
asked for are read (zkfp.safetensors_folder), so peak memory is what the caller keeps, not the
model's size.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import numpy as np

from zkfp.errors import CheckpointError
from zkfp.files import read_json
from zkfp.safetensors_folder import SafetensorsFolder

if TYPE_CHECKING:
    import torch


def to_torch(array: np.ndarray) -> "torch.Tensor":
    """A numpy tensor as a torch tensor of the same dtype, sharing its memory (bfloat16 included)."""
    import ml_dtypes
    import torch

    if array.dtype == ml_dtypes.bfloat16:
        return torch.from_numpy(np.ascontiguousarray(array).view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(np.ascontiguousarray(array))


class TorchTensors:
    """Torch access by name to the tensors of a SafetensorsFolder (`self.tensors`), in their stored
    dtype unless `dtype` is given. The interface zkfp.architectures.ModelReader reads."""

    tensors: SafetensorsFolder

    @property
    def names(self) -> list[str]:
        return self.tensors.names

    def __contains__(self, name: str) -> bool:
        return name in self.tensors

    def shape(self, name: str) -> tuple[int, ...]:
        return self.tensors.shape(name)

    def dtype(self, name: str) -> str:
        return self.tensors.dtype(name)

    def get(self, name: str, dtype: "torch.dtype | None" = None) -> "torch.Tensor":
        """Read one tensor (converted to `dtype` when given)."""
        tensor = to_torch(self.tensors.raw(name))
        return tensor if dtype is None else tensor.to(dtype)

    def get_rows(self, name: str, rows: Iterable[int], dtype: "torch.dtype | None" = None) -> "torch.Tensor":
        """Selected rows of a 2-D tensor without materialising the rest (e.g. embedding rows)."""
        tensor = to_torch(self.tensors.rows(name, rows))
        return tensor if dtype is None else tensor.to(dtype)

    def close(self) -> None:
        """Drop the open (memory-mapped) files, whose pages count in RSS; later reads reopen them."""
        self.tensors.close()


class Checkpoint(TorchTensors):
    """Read-only view of a checkpoint's config and tensors, opened lazily per shard."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.exists():
            raise CheckpointError(f"model folder does not exist: {self.path}")
        if not self.path.is_dir():
            raise CheckpointError(f"not a model folder: {self.path}")
        if not any(self.path.iterdir()):
            raise CheckpointError(f"model folder is empty: {self.path}")
        if not (self.path / "config.json").is_file():
            raise CheckpointError(f"no config.json in {self.path}: not a transformers checkpoint")
        self.config: dict = read_json(self.path / "config.json", "config.json")
        self.tensors = SafetensorsFolder(self.path, error=CheckpointError)

    def files(self) -> list[Path]:
        return self.tensors.files()
