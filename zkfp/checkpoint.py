"""Lazy, pickle-free reading of a local transformers checkpoint.

A checkpoint is a folder with `config.json` and safetensors weights, either one
`model.safetensors` or shards listed in `model.safetensors.index.json`. Only the tensors
asked for are read, so peak memory is what the caller keeps, not the model's size.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from safetensors import SafetensorError, safe_open

from zkfp.errors import CheckpointError
from zkfp.files import read_json

if TYPE_CHECKING:
    import torch

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"


class Checkpoint:
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
        self._file_of = self._map_tensors_to_files()
        self._handles: dict[Path, object] = {}

    # -- discovery -----------------------------------------------------------------------
    def _map_tensors_to_files(self) -> dict[str, Path]:
        index = self.path / INDEX_FILE
        if index.is_file():
            weight_map = read_json(index, INDEX_FILE).get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise CheckpointError(f"{index} has no weight_map")
            files = {name: self._shard(name_) for name, name_ in weight_map.items()}
            for shard in set(files.values()):
                self._check_header(shard)
            return files
        shards = sorted(self.path.glob("*.safetensors"))
        if not shards:
            pickles = [p.name for p in self.path.iterdir() if p.suffix in PICKLE_SUFFIXES]
            if pickles:
                raise CheckpointError(
                    f"{self.path} holds only pickle weights ({', '.join(sorted(pickles))}); zkfp never "
                    "unpickles files from outside. Convert them to safetensors first (e.g. load them "
                    "yourself, trusting the source, and call model.save_pretrained(dir, safe_serialization=True))."
                )
            raise CheckpointError(f"no safetensors weights in {self.path}")
        files: dict[str, Path] = {}
        for shard in shards:
            for name in self._check_header(shard):
                files[name] = shard
        return files

    def _shard(self, file_name: str) -> Path:
        shard = (self.path / file_name).resolve()
        if self.path.resolve() not in shard.parents:
            raise CheckpointError(f"shard path escapes the model folder: {file_name}")
        if not shard.is_file():
            raise CheckpointError(f"shard listed in {INDEX_FILE} is missing: {file_name}")
        return shard

    @staticmethod
    def _check_header(shard: Path) -> list[str]:
        try:
            with safe_open(shard, framework="pt") as handle:
                return list(handle.keys())
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"corrupted or truncated safetensors file {shard.name}: {exc}") from None

    # -- access --------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return list(self._file_of)

    def __contains__(self, name: str) -> bool:
        return name in self._file_of

    def files(self) -> list[Path]:
        return sorted(set(self._file_of.values()))

    def _handle(self, name: str):
        if name not in self._file_of:
            raise CheckpointError(f"tensor {name!r} is missing from {self.path}")
        shard = self._file_of[name]
        if shard not in self._handles:
            self._handles[shard] = safe_open(shard, framework="pt")
        return self._handles[shard]

    def close(self) -> None:
        """Drop the open (memory-mapped) shards, whose pages count in RSS; later reads reopen them."""
        self._handles.clear()

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._handle(name).get_slice(name).get_shape())

    def dtype(self, name: str) -> str:
        return self._handle(name).get_slice(name).get_dtype()

    def get(self, name: str, dtype: "torch.dtype | None" = None) -> "torch.Tensor":
        """Read one tensor (converted to `dtype` when given)."""
        try:
            tensor = self._handle(name).get_tensor(name)
        except SafetensorError as exc:
            raise CheckpointError(f"cannot read tensor {name!r} from {self.path}: {exc}") from None
        return tensor if dtype is None else tensor.to(dtype)

    def get_rows(self, name: str, rows: Iterable[int], dtype: "torch.dtype | None" = None) -> "torch.Tensor":
        """Read selected rows of a 2-D tensor without materialising the rest (e.g. embedding rows)."""
        import torch

        rows = list(rows)
        sliced = self._handle(name).get_slice(name)
        if not rows:
            raise CheckpointError("no rows requested")
        out = torch.stack([sliced[r : r + 1][0] for r in rows])
        return out if dtype is None else out.to(dtype)
