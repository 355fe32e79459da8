"""The committed circuit inputs, read from a Taylor release's safetensors files with numpy.

numpy only (no torch): the prover and the verifier both call `release_inputs`, so the
verifier quantises and commits exactly the tensors the prover fed the circuit. A release keeps
its source's dtype for the tensors it stores in clear; the one reader of safetensors folders
(zkfp.safetensors_folder: safetensors' numpy API, bfloat16 from ml_dtypes) widens them to
float32 exactly.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from circuits.spec import DEFAULT_ORDERS, CircuitShape, LayerShape
from zkfp.errors import ReleaseError
from zkfp.safetensors_folder import FLOAT_DTYPES, SafetensorsFolder, plain_file_name
from zkfp.safetensors_folder import to_float32 as _widen

MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 64 << 20
MAX_HEADER_BYTES = 100 << 20  # safetensors' own limit on a file's JSON header

# safetensors dtype -> how its little-endian bytes are stored (BF16: raw bits, widened in to_float32)
_RAW_DTYPES = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2"), "F64": np.dtype("<f8")}


def read_header(path: Path) -> tuple[dict, int]:
    """A safetensors file's raw header (tensor name -> {dtype, shape, data_offsets}) and where its
    data section starts. Reading goes through the safetensors library, which exposes no byte
    offsets; this serves the callers that address bytes (StoredTensor.start)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            n = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
            if not 2 <= n <= min(MAX_HEADER_BYTES, size - 8):
                raise ReleaseError(f"{path.name} is not a safetensors file (bad header length)")
            header = json.loads(f.read(n))
    except OSError as exc:
        raise ReleaseError(f"cannot read {path.name}: {exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ReleaseError(f"{path.name} has a malformed safetensors header: {exc}") from None
    if not isinstance(header, dict):
        raise ReleaseError(f"{path.name} has a malformed safetensors header")
    return header, 8 + n


def to_float32(raw: np.ndarray, dtype: str) -> np.ndarray:
    """Tensor values of safetensors dtype `dtype` as float32: exact for F32, F16 and BF16 (given
    as ml_dtypes.bfloat16, or as the raw uint16 bits, the top half of the float32 of the same
    value); F64 is rounded."""
    if dtype == "BF16" and raw.dtype == np.uint16:
        return (raw.astype(np.uint32) << 16).view(np.float32)
    return _widen(raw)


@dataclass(frozen=True)
class StoredTensor:
    """Where one tensor's bytes lie in a safetensors file, checked against its header."""

    path: Path
    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int            # absolute offset of its first byte
    raw: np.dtype         # how its elements are stored

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def read(self, first: int = 0, count: int | None = None) -> np.ndarray:
        """Elements [first, first + count) in storage order as float32 (flat), reading only them
        (through safetensors, which also refuses a truncated file)."""
        folder = SafetensorsFolder(self.path.parent, {self.name: self.path.name}, error=ReleaseError)
        return _widen(folder.flat(self.name, first, count))


def locate(path: Path, header: dict, data_start: int, name: str) -> StoredTensor:
    """The checked location of tensor `name` (dtype readable, offsets consistent with its shape)."""
    entry = header.get(name)
    if not isinstance(entry, dict):
        raise ReleaseError(f"tensor {name} is not in {path.name}")
    try:
        dtype, shape = str(entry["dtype"]), tuple(int(x) for x in entry["shape"])
        begin, end = (int(x) for x in entry["data_offsets"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ReleaseError(f"{path.name} has a malformed header entry for {name}: {exc}") from None
    raw_dtype = _RAW_DTYPES.get(dtype)
    if raw_dtype is None:
        raise ReleaseError(f"tensor {name} has dtype {dtype}; the circuit reads floating-point tensors "
                           f"({', '.join(_RAW_DTYPES)}) only")
    count = int(np.prod(shape, dtype=np.int64))
    if min(shape, default=0) < 0 or not 0 <= begin <= end or end - begin != count * raw_dtype.itemsize:
        raise ReleaseError(f"{path.name} has inconsistent offsets for tensor {name}")
    return StoredTensor(path, name, dtype, shape, data_start + begin, raw_dtype)


def read_tensor(path: Path, header: dict, data_start: int, name: str) -> np.ndarray:
    """One tensor of a safetensors file as float32, reading only its own bytes."""
    t = locate(path, header, data_start, name)
    return t.read().reshape(t.shape)


class Release:
    """Minimal read-only view of a release folder (manifest + safetensors, numpy)."""

    def __init__(self, path: str | os.PathLike):
        from zkfp.architectures import CAUSAL_FAMILIES, detect

        self.path = Path(path)
        mpath = self.path / MANIFEST
        if not mpath.is_file():
            raise ReleaseError(f"release manifest not found: {mpath}")
        if mpath.stat().st_size > MAX_MANIFEST_BYTES:
            raise ReleaseError(f"release manifest is too large: {mpath}")
        try:
            self.manifest = json.loads(mpath.read_text())
            self.config = self.manifest["source"]["config"]
            self.tensors: dict = dict(self.manifest["tensors"])
            self.files: dict = dict(self.manifest["files"])
            self.layers_info: list = list(self.manifest["layers"])
            self.n_terms = int(self.manifest["n_terms"])
            self.activation = str(self.manifest["activation"])
            self.layout = dict(self.manifest["mlp_layout"])
            weight_map = {name: info["file"] for name, info in self.tensors.items()}
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ReleaseError(f"release manifest is malformed: {exc}") from None
        self.arch = detect(self.config, CAUSAL_FAMILIES)
        fam = self.arch.family
        if fam.mlp != "gated" or fam.norm != "rms" or fam.qkv is not None:
            raise ReleaseError(f"the proof circuit supports gated RMSNorm families (Llama, Mistral, Qwen2); "
                               f"this release is {fam.name}")
        if not self.layout.get("gated") or self.layout.get("in_bias") or self.layout.get("down_bias"):
            raise ReleaseError("the proof circuit supports gated MLPs without biases only")
        self.prefix = next((p for p in fam.base_prefixes if p + fam.embed in self.tensors), None)
        if self.prefix is None:
            raise ReleaseError("release has no embedding tensor")
        self.folder = SafetensorsFolder(self.path, weight_map, error=ReleaseError, source="release manifest")
        self._headers: dict[str, tuple[dict, int]] = {}  # file name -> (header, data start)

    # -- tensors --------------------------------------------------------------------------
    def key(self, name: str, layer: int | None = None) -> str:
        if layer is None:
            return self.prefix + name
        return self.prefix + self.arch.family.layer.format(i=layer) + name

    def _checked(self, name: str) -> tuple[int, ...]:
        """Tensor `name`'s shape, the manifest's and its file's alike; its dtype a float."""
        info = self.tensors.get(name)
        if info is None:
            raise ReleaseError(f"tensor {name!r} is not in the release")
        shape = self.folder.shape(name)
        if shape != tuple(info["shape"]):
            raise ReleaseError(f"tensor {name} has shape {shape}, manifest says {info['shape']}")
        dtype = self.folder.dtype(name)
        if dtype not in FLOAT_DTYPES:
            raise ReleaseError(f"tensor {name} has dtype {dtype}; the circuit reads floating-point tensors "
                               f"({', '.join(FLOAT_DTYPES)}) only")
        return shape

    def locate(self, name: str) -> StoredTensor:
        """Where tensor `name` lies, its file named by the manifest and its shape the manifest's."""
        self._checked(name)
        fname = plain_file_name(self.tensors[name]["file"], ReleaseError, "release")
        if fname not in self._headers:
            self._headers[fname] = read_header(self.path / fname)
        return locate(self.path / fname, *self._headers[fname], name)

    def get(self, name: str) -> np.ndarray:
        """A tensor as float32 (F32, F16, BF16 exactly; F64 rounded; other dtypes refused)."""
        shape = self._checked(name)
        return _widen(self.folder.raw(name)).reshape(shape)

    def mlp(self, layer: int, name: str) -> np.ndarray:
        return self.get(f"taylor.layers.{layer}.{name}")

    def vocab(self) -> int:
        return int(self.tensors[self.key(self.arch.family.embed)]["shape"][0])


def lsq_weights(activation: str, anchor: np.ndarray, orders=DEFAULT_ORDERS) -> np.ndarray:
    """taylor.jets.lsq_weights for the circuit's orders, float32 (numpy only; the verifier
    recomputes them from its own copy of the anchors)."""
    from taylor.jets import lsq_weights as weights

    return weights(activation, anchor, orders).astype(np.float32)


def last_layers(rel: Release, n_layers: int) -> list[int]:
    total = rel.arch.dims.layers
    if total < n_layers:
        raise ReleaseError(f"model has {total} layers, the fingerprint needs the last {n_layers}")
    return list(range(total - n_layers, total))


def shape_of(rel: Release, k: int, n_layers: int, m: int, **overrides) -> CircuitShape:
    d = rel.arch.dims
    layers = []
    for i in last_layers(rel, n_layers):
        s = len(rel.layers_info[i]["expanded"])
        layers.append(LayerShape(expanded=s, exact=d.intermediate - s))
    return CircuitShape(k=k, hidden=d.hidden, heads=d.heads, kv_heads=d.kv_heads, head_dim=d.head_dim,
                        intermediate=d.intermediate, layers=tuple(layers), m=m,
                        activation=rel.activation, **overrides)


def release_inputs(rel: Release, shape: CircuitShape, token_ids: list[int]) -> list[np.ndarray]:
    """The circuit's inputs, in `shape.input_specs()` order, float32."""
    fam = rel.arch.family
    vocab = rel.vocab()
    if any(not 0 <= t < vocab for t in token_ids) or len(token_ids) != shape.k:
        raise ReleaseError(f"token ids must be {shape.k} ids below the vocabulary size {vocab}")
    emb = rel.get(rel.key(fam.embed))
    out: list[np.ndarray] = [emb[np.asarray(token_ids, dtype=np.int64)].copy()]
    del emb
    orders = list(shape.orders)
    for i in last_layers(rel, len(shape.layers)):
        w = lambda role: rel.get(rel.key(role + ".weight", i))  # noqa: E731
        anchor = rel.mlp(i, "anchor")
        coeffs = rel.mlp(i, "coeffs")
        if max(orders) >= coeffs.shape[0]:
            raise ReleaseError(f"release has {coeffs.shape[0]} Taylor orders, the circuit reads orders {orders}")
        out += [
            rel.get(rel.key(fam.attn_norm + ".weight", i)), w(fam.q), w(fam.k), w(fam.v), w(fam.o),
            rel.get(rel.key(fam.mlp_norm + ".weight", i)),
            rel.mlp(i, "in_weight"), rel.mlp(i, "up_weight"),
            np.ascontiguousarray(coeffs[orders]), lsq_weights(rel.activation, anchor, shape.orders),
            rel.mlp(i, "exact_in_weight"), rel.mlp(i, "exact_up_weight"), rel.mlp(i, "exact_down_weight"),
        ]
    for (name, want), arr in zip(shape.input_specs(), out):
        if tuple(arr.shape) != tuple(want):
            raise ReleaseError(f"circuit input {name} has shape {arr.shape}, the circuit expects {want}")
        if not np.isfinite(arr).all():
            raise ReleaseError(f"circuit input {name} holds non-finite values (NaN or inf): no fingerprint to prove")
    return out
