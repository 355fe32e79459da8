"""One reader for a folder of safetensors files: a transformers checkpoint or a Taylor release.

numpy + safetensors only (no torch: the verifier reads releases through this module). Files are
opened with safetensors' numpy API, which memory-maps them and checks each header (offsets,
sizes, dtypes) before anything is read; a tensor, or a run of its rows, is copied out on demand,
so a caller holds only what it asked for. numpy has no bfloat16 of its own: importing
`ml_dtypes` registers one, so BF16 tensors come back as stored (writers can keep bf16) and widen
to float32 exactly (a bfloat16 is the top half of the float32 of the same value).

Which file holds which tensor comes from the caller (a release's manifest), from
`model.safetensors.index.json`, or from the headers of every `*.safetensors` file in the folder.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Iterable, Mapping

import ml_dtypes  # noqa: F401  (registers numpy's bfloat16, which safetensors' numpy API then reads)
import numpy as np
from safetensors import SafetensorError, safe_open

from zkfp.errors import CheckpointError, ZkfpError
from zkfp.files import read_json

INDEX_FILE = "model.safetensors.index.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
FLOAT_DTYPES = ("F32", "F16", "BF16", "F64")  # widen to float32 exactly, except F64 (rounded)


def plain_file_name(name: str, error: type[ZkfpError], what: str) -> str:
    """`name` if it names a file directly inside the folder (no path, no hidden file)."""
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name.startswith("."):
        raise error(f"{what} lists a file name that is not a plain name: {name!r}")
    return name


def to_float32(array: np.ndarray) -> np.ndarray:
    """A floating-point tensor as float32 (F32, F16, BF16 exactly; F64 rounded)."""
    return array if array.dtype == np.float32 else array.astype(np.float32)


class SafetensorsFolder:
    """Lazy, validated, numpy read access to the tensors of a folder of safetensors files.

    `weight_map` (tensor name -> file name) says where each tensor lies; without it the folder's
    index, or else every `*.safetensors` file's header, says so. Failures raise `error` (a
    ZkfpError subclass) naming the file or tensor; `source` names where the weight map came from.
    """

    def __init__(self, path: str | os.PathLike, weight_map: Mapping[str, str] | None = None, *,
                 error: type[ZkfpError] = CheckpointError, source: str = "the weight map"):
        self.path = Path(path)
        self.error = error
        self._handles: dict[str, object] = {}
        if weight_map is None:
            weight_map = self._discover()
        self._file_of = {name: plain_file_name(f, error, source) for name, f in weight_map.items()}

    # -- where the tensors are -----------------------------------------------------------
    def _discover(self) -> dict[str, str]:
        index = self.path / INDEX_FILE
        if index.is_file():
            weight_map = read_json(index, INDEX_FILE).get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise self.error(f"{index} has no weight_map")
            for file_name in sorted(set(weight_map.values())):
                plain_file_name(file_name, self.error, INDEX_FILE)
                if not (self.path / file_name).is_file():
                    raise self.error(f"shard listed in {INDEX_FILE} is missing: {file_name}")
                self.entries(file_name)  # a corrupt shard is named now, not at its first read
            return dict(weight_map)
        files = sorted(p.name for p in self.path.glob("*.safetensors"))
        if not files:
            pickles = sorted(p.name for p in self.path.iterdir() if p.suffix in PICKLE_SUFFIXES)
            if pickles:
                raise self.error(
                    f"{self.path} holds only pickle weights ({', '.join(pickles)}); zkfp never unpickles "
                    "files from outside. Convert them to safetensors first (e.g. load them yourself, trusting "
                    "the source, and call model.save_pretrained(dir, safe_serialization=True))."
                )
            raise self.error(f"no safetensors weights in {self.path}")
        return {name: f for f in files for name in self.entries(f)}

    def _open(self, file_name: str):
        if file_name not in self._handles:
            try:
                self._handles[file_name] = safe_open(self.path / file_name, framework="np")
            except FileNotFoundError:
                raise self.error(f"file missing from {self.path}: {file_name}") from None
            except (SafetensorError, OSError) as exc:
                raise self.error(f"corrupted or truncated safetensors file {file_name}: {exc}") from None
        return self._handles[file_name]

    def entries(self, file_name: str) -> dict[str, tuple[tuple[int, ...], str]]:
        """What `file_name`'s header declares: tensor name -> (shape, safetensors dtype)."""
        handle = self._open(file_name)
        out = {}
        for name in handle.keys():
            sliced = handle.get_slice(name)
            out[name] = (tuple(sliced.get_shape()), sliced.get_dtype())
        return out

    @property
    def names(self) -> list[str]:
        return list(self._file_of)

    def __contains__(self, name: str) -> bool:
        return name in self._file_of

    def file_of(self, name: str) -> str:
        if name not in self._file_of:
            raise self.error(f"tensor {name!r} is missing from {self.path}")
        return self._file_of[name]

    def files(self) -> list[Path]:
        return [self.path / f for f in sorted(set(self._file_of.values()))]

    def close(self) -> None:
        """Drop the open (memory-mapped) files, whose touched pages count in RSS; reads reopen them."""
        self._handles.clear()

    # -- reading -------------------------------------------------------------------------
    def _slice(self, name: str):
        file_name = self.file_of(name)
        handle = self._open(file_name)
        try:
            return handle.get_slice(name)
        except SafetensorError as exc:
            raise self.error(f"tensor {name} is not in {file_name}: {exc}") from None

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._slice(name).get_shape())

    def dtype(self, name: str) -> str:
        """The safetensors dtype name (F32, BF16, I64, ...)."""
        return self._slice(name).get_dtype()

    def _read(self, name: str, index: slice | None) -> np.ndarray:
        try:
            if index is None:
                return self._open(self.file_of(name)).get_tensor(name)
            return self._slice(name)[index]
        except (SafetensorError, TypeError, ValueError) as exc:  # TypeError: a dtype numpy cannot hold
            raise self.error(f"cannot read tensor {name} ({self.file_of(name)}): {exc}") from None

    def raw(self, name: str) -> np.ndarray:
        """The whole tensor in its stored dtype (BF16 as ml_dtypes.bfloat16)."""
        return self._read(name, None)

    def rows(self, name: str, rows: Iterable[int]) -> np.ndarray:
        """Selected rows of a tensor (index along its first axis), stored dtype, reading only them."""
        rows = [int(r) for r in rows]
        if not rows:
            raise self.error(f"no rows of {name} requested")
        n = self.shape(name)[0] if self.shape(name) else 0
        bad = [r for r in rows if not 0 <= r < n]
        if bad:
            raise self.error(f"row {bad[0]} is outside tensor {name} ({n} rows)")
        return np.stack([self._read(name, slice(r, r + 1))[0] for r in rows])

    def flat(self, name: str, first: int = 0, count: int | None = None) -> np.ndarray:
        """Elements [first, first + count) in storage order (flat, stored dtype), reading only the
        rows of the first axis that hold them (e.g. one Taylor order of a coefficient tensor)."""
        shape = self.shape(name)
        size = math.prod(shape)
        count = size - first if count is None else count
        if first < 0 or count < 0 or first + count > size:
            raise self.error(f"elements {first}..{first + count} are outside tensor {name} ({size} elements)")
        if not shape or count == 0:
            return self.raw(name).reshape(-1)[first:first + count]
        row = size // shape[0] if shape[0] else 1
        r0, r1 = first // row, -(-(first + count) // row)
        block = self._read(name, slice(r0, r1)).reshape(-1)
        return block[first - r0 * row: first - r0 * row + count]

    def float32(self, name: str) -> np.ndarray:
        """The whole tensor as float32 (see to_float32); non-float dtypes are refused, named."""
        self.check_float(name)
        return to_float32(self.raw(name))

    def check_float(self, name: str) -> str:
        dtype = self.dtype(name)
        if dtype not in FLOAT_DTYPES:
            raise self.error(f"tensor {name} has dtype {dtype}; only floating-point tensors "
                             f"({', '.join(FLOAT_DTYPES)}) are read as float32")
        return dtype
